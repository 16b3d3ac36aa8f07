//! Where a member's time goes: its tract plan run node by node, each node timed, the times
//! summed by operator.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tract_core::plan::{eval, SimpleState};
use tract_onnx::prelude::*;

/// Time spent in one operator kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpTime {
    pub op: String,
    /// Nodes of this kind in the optimised plan.
    pub nodes: usize,
    /// Mean milliseconds per run, all nodes of this kind together.
    pub ms_per_run: f64,
}

/// Runs `plan` on `input` `runs` times and returns the time per operator kind, largest first.
pub fn profile_plan(
    plan: &Arc<TypedSimplePlan>,
    input: &TValue,
    runs: usize,
) -> TractResult<Vec<OpTime>> {
    let runs = runs.max(1);
    let mut state = SimpleState::new(plan)?;
    let mut per_node: HashMap<usize, (String, f64)> = HashMap::new();
    for _ in 0..runs {
        state.run_plan_with_eval(tvec!(input.clone()), |ctx, op_state, node, inputs| {
            let started = Instant::now();
            let outputs = eval(ctx, op_state, node, inputs);
            let entry = per_node
                .entry(node.id)
                .or_insert_with(|| (node.op().name().to_string(), 0.0));
            entry.1 += started.elapsed().as_secs_f64() * 1e3;
            outputs
        })?;
    }
    let mut by_op: HashMap<String, OpTime> = HashMap::new();
    for (op, ms) in per_node.into_values() {
        let entry = by_op.entry(op.clone()).or_insert(OpTime {
            op,
            nodes: 0,
            ms_per_run: 0.0,
        });
        entry.nodes += 1;
        entry.ms_per_run += ms / runs as f64;
    }
    let mut times: Vec<OpTime> = by_op.into_values().collect();
    times.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
    Ok(times)
}
