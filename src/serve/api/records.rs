//! The journal's records through the API: `GET /api/v1/records` (newest first, filtered) and
//! `/records/export` (CSV or JSON lines).

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState, Shared};
use crate::history::{csv_row, FlagFilter, RecordFilter, CSV_HEADER};
use crate::journal::{read_journal, JournalRecord};

/// `GET /api/v1/records` and `/records/export` query: filters, a limit, an export format.
#[derive(Debug, Deserialize)]
pub(super) struct RecordsQuery {
    limit: Option<usize>,
    since: Option<String>,
    until: Option<String>,
    flag: Option<FlagFilter>,
    format: Option<String>,
}

impl RecordsQuery {
    fn filter(&self) -> Result<RecordFilter, ApiError> {
        let filter = RecordFilter {
            since: self.since.clone(),
            until: self.until.clone(),
            flag: self.flag,
        };
        filter
            .check()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
        Ok(filter)
    }
}

/// The journal's records that pass `filter`, oldest first, read off the async executor.
async fn journal_records(
    state: &AppState,
    filter: RecordFilter,
) -> Result<Vec<JournalRecord>, ApiError> {
    let Some(path) = state.journal_path.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this server keeps no journal (started with --no-journal)",
        ));
    };
    let read = tokio::task::spawn_blocking(move || read_journal(&path)).await;
    let records = match read {
        Ok(Ok(records)) => records,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the journal: {e}"),
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the journal: {e}"),
            ))
        }
    };
    Ok(records
        .into_iter()
        .filter_map(Result::ok)
        .filter(|r| filter.matches(r))
        .collect())
}

pub(super) async fn records(
    State(state): Shared,
    Query(query): Query<RecordsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let filter = query.filter()?;
    let mut records = journal_records(&state, filter).await?;
    let total = records.len();
    records.reverse();
    records.truncate(limit);
    Ok(Json(json!({ "total": total, "records": records })))
}

pub(super) async fn export(
    State(state): Shared,
    Query(query): Query<RecordsQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter()?;
    let format = query.format.as_deref().unwrap_or("csv");
    if !matches!(format, "csv" | "jsonl") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("format `{format}` is not csv or jsonl"),
        ));
    }
    let records = journal_records(&state, filter).await?;
    let (body, kind, file) = if format == "csv" {
        let mut text = format!("{CSV_HEADER}\n");
        for record in &records {
            text.push_str(&csv_row(record));
            text.push('\n');
        }
        (text, "text/csv; charset=utf-8", "dermedge-journal.csv")
    } else {
        let mut text = String::new();
        for record in &records {
            text.push_str(&serde_json::to_string(record).unwrap_or_default());
            text.push('\n');
        }
        (text, "application/x-ndjson", "dermedge-journal.jsonl")
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        body,
    )
        .into_response())
}
