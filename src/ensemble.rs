//! Loading the member networks with tract and combining their outputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use tract_linalg::multithread::{current_tract_executor, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::decision::{self, Decision};
use crate::digest::sha256_hex;
use crate::integrity::{PublicKey, SignatureError};
use crate::manifest::{Flip, InputSpec, Manifest, ManifestError, MemberOutput, MemberSpec};
use crate::preprocess::{flip_nchw, to_input_tensor};

/// Largest member file accepted, in bytes.
pub const MAX_MEMBER_BYTES: u64 = 512 << 20;

/// Why an ensemble could not be loaded. Every message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("member {path} listed in {manifest} is missing ({source}). Fix: restore the file next to the manifest, or remove the member from [[members]]")]
    MissingMember {
        path: PathBuf,
        manifest: PathBuf,
        source: std::io::Error,
    },
    #[error("member {path} is {size} bytes, over the {MAX_MEMBER_BYTES}-byte limit. Fix: ship a smaller (quantized) model")]
    MemberTooLarge { path: PathBuf, size: u64 },
    #[error("checksum mismatch for member {path}: {manifest} says sha256 {expected}, the file has {actual}. Fix: the file is damaged or was replaced; reinstall the ensemble from its release")]
    Checksum {
        path: PathBuf,
        manifest: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("member {path} is not a loadable ONNX model: {message}. Fix: the file is truncated or not ONNX; reinstall the ensemble from its release")]
    Load { path: PathBuf, message: String },
    #[error("member {path} takes input {declared}, but {manifest} gives it [1, 3, {height}, {width}] (the member's own `input`, else [input]). Fix: make that width/height match the model, or re-export the model for that size")]
    InputShape {
        path: PathBuf,
        manifest: PathBuf,
        declared: String,
        width: u32,
        height: u32,
    },
    #[error("member {path} outputs shape {shape}, but {manifest} lists {classes} classes. Fix: list the model's classes in [[classes]], in output order, or use a model with a {classes}-way output")]
    OutputShape {
        path: PathBuf,
        manifest: PathBuf,
        shape: String,
        classes: usize,
    },
}

/// A member failed while running on an input.
#[derive(Debug, thiserror::Error)]
#[error("member {member} failed: {message}. Fix: the input was not classified; if this repeats, reinstall the ensemble")]
pub struct InferenceError {
    pub member: String,
    pub message: String,
}

/// One loaded, optimised member network.
#[derive(Debug)]
pub struct Member {
    pub spec: MemberSpec,
    pub path: PathBuf,
    pub file_bytes: u64,
    /// Wall time to parse, type, declutter and optimise the model, in milliseconds.
    pub load_ms: f64,
    plan: Arc<TypedSimplePlan>,
}

/// Reads a member file, checks its size and checksum, and returns its bytes.
pub fn read_member_file(
    path: &Path,
    expected_sha256: &str,
    manifest_path: &Path,
) -> Result<Vec<u8>, EnsembleError> {
    let missing = |source| EnsembleError::MissingMember {
        path: path.to_path_buf(),
        manifest: manifest_path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(missing)?.len();
    if size > MAX_MEMBER_BYTES {
        return Err(EnsembleError::MemberTooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(missing)?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(EnsembleError::Checksum {
            path: path.to_path_buf(),
            manifest: manifest_path.to_path_buf(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

/// Parses ONNX bytes and returns the model typed with its input pinned to `[1, 3, height, width]`
/// and decluttered. Errors name `path`.
pub fn typed_model_for_input(
    bytes: &[u8],
    path: &Path,
    input: &InputSpec,
    manifest_path: &Path,
) -> Result<TypedModel, EnsembleError> {
    let load_error = |e: TractError| EnsembleError::Load {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    };
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(load_error)?;
    let expected = [1usize, 3, input.height as usize, input.width as usize];
    let input_shape_error = |declared: String| EnsembleError::InputShape {
        path: path.to_path_buf(),
        manifest: manifest_path.to_path_buf(),
        declared,
        width: input.width,
        height: input.height,
    };
    if model.inputs.len() != 1 || model.outputs.len() != 1 {
        return Err(EnsembleError::Load {
            path: path.to_path_buf(),
            message: format!(
                "it has {} inputs and {} outputs; a member has exactly one of each",
                model.inputs.len(),
                model.outputs.len()
            ),
        });
    }
    let declared = model.input_fact(0).map_err(load_error)?.clone();
    let declared_dims: Vec<Option<i64>> = declared
        .shape
        .dims()
        .map(|d| d.concretize().and_then(|d| d.to_i64().ok()))
        .collect();
    let describe = || {
        let dims: Vec<String> = declared_dims
            .iter()
            .map(|d| d.map_or("?".into(), |d| d.to_string()))
            .collect();
        format!("[{}]", dims.join(", "))
    };
    if !declared.shape.is_open() && declared_dims.len() != 4 {
        return Err(input_shape_error(describe()));
    }
    for (axis, dim) in declared_dims.iter().enumerate().skip(1) {
        if let Some(d) = dim {
            if expected.get(axis).map(|e| *e as i64) != Some(*d) {
                return Err(input_shape_error(describe()));
            }
        }
    }
    model
        .with_input_fact(0, f32::fact(expected).into())
        .and_then(|m| m.into_typed())
        .and_then(crate::int8::declutter)
        .map_err(|e| {
            let message = format!("{e:#}");
            if message.contains("shape") || message.contains("Shape") {
                input_shape_error(format!("{} ({message})", describe()))
            } else {
                load_error(e)
            }
        })
}

impl Member {
    /// Loads, checks and optimises the member `spec` of the manifest at `manifest_path`.
    pub fn load(
        spec: &MemberSpec,
        manifest_path: &Path,
        input: &InputSpec,
        classes: usize,
    ) -> Result<Member, EnsembleError> {
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let path = dir.join(&spec.file);
        let bytes = read_member_file(&path, &spec.sha256, manifest_path)?;
        let started = Instant::now();
        let typed = typed_model_for_input(&bytes, &path, input, manifest_path)?;
        let output_shape = output_shape(&typed).map_err(|e| EnsembleError::Load {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        let ok_shape = matches!(output_shape.as_slice(), [n] | [1, n] if *n == classes);
        if !ok_shape {
            return Err(EnsembleError::OutputShape {
                path,
                manifest: manifest_path.to_path_buf(),
                shape: format!("{output_shape:?}"),
                classes,
            });
        }
        let typed = match crate::int8::rewrite(&typed) {
            Ok(Some((rewritten, summary))) => {
                log::info!("member {}: {summary}", path.display());
                rewritten
            }
            Ok(None) => typed,
            Err(e) => {
                return Err(EnsembleError::Load {
                    path: path.clone(),
                    message: format!("int8 rewrite: {e:#}"),
                })
            }
        };
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| EnsembleError::Load {
                path: path.clone(),
                message: format!("{e:#}"),
            })?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        log::info!("loaded member {} in {load_ms:.0} ms", path.display());
        Ok(Member {
            spec: spec.clone(),
            path,
            file_bytes: bytes.len() as u64,
            load_ms,
            plan,
        })
    }

    /// The optimised tract plan.
    pub fn plan(&self) -> &Arc<TypedSimplePlan> {
        &self.plan
    }

    /// A short label: the backbone and file name.
    pub fn label(&self) -> String {
        format!("{} ({})", self.spec.backbone, self.spec.file.display())
    }

    /// Runs the network on a prepared input and returns its raw output values.
    pub fn run_raw(&self, input: &TValue) -> Result<Vec<f32>, InferenceError> {
        let fail = |e: TractError| InferenceError {
            member: self.label(),
            message: format!("{e:#}"),
        };
        let outputs = self.plan.run(tvec!(input.clone())).map_err(fail)?;
        let view = outputs[0].to_plain_array_view::<f32>().map_err(fail)?;
        Ok(view.iter().copied().collect())
    }

    /// Turns the raw outputs of one input's views into probabilities averaged over the views
    /// (test-time augmentation).
    fn mean_over_views(
        &self,
        raw: &[Vec<f32>],
        temperature: f32,
    ) -> Result<Vec<f32>, InferenceError> {
        if raw.is_empty() {
            return Err(InferenceError {
                member: self.label(),
                message: "it was given no input views".into(),
            });
        }
        let per_view = raw
            .iter()
            .map(|r| self.probabilities_from_raw(r.clone(), temperature))
            .collect::<Result<Vec<_>, _>>()?;
        let slices: Vec<&[f32]> = per_view.iter().map(Vec::as_slice).collect();
        Ok(decision::mean(&slices))
    }

    /// Runs the network and returns class probabilities, temperature-scaled when the member
    /// outputs logits.
    pub fn probabilities(
        &self,
        input: &TValue,
        temperature: f32,
    ) -> Result<Vec<f32>, InferenceError> {
        self.probabilities_from_raw(self.run_raw(input)?, temperature)
    }

    /// Checks a raw output and turns it into class probabilities (temperature-scaled softmax of
    /// logits, or the member's own distribution).
    fn probabilities_from_raw(
        &self,
        raw: Vec<f32>,
        temperature: f32,
    ) -> Result<Vec<f32>, InferenceError> {
        let broken = |what: &str| InferenceError {
            member: self.label(),
            message: format!("it produced {what}"),
        };
        if raw.iter().any(|v| !v.is_finite()) {
            return Err(broken("non-finite outputs (NaN or infinity)"));
        }
        match self.spec.output {
            MemberOutput::Logits => Ok(decision::softmax(&raw, temperature)),
            MemberOutput::Probabilities => {
                let sum: f32 = raw.iter().sum();
                if raw.iter().any(|p| !(0.0..=1.0).contains(p)) || (sum - 1.0).abs() > 1e-3 {
                    Err(broken("`probabilities` that are not a distribution; is `output` right in the manifest?"))
                } else {
                    Ok(raw)
                }
            }
        }
    }
}

fn output_shape(model: &TypedModel) -> TractResult<Vec<usize>> {
    let fact = model.output_fact(0)?;
    fact.shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| anyhow::anyhow!("output shape {:?} is not concrete", fact.shape))
}

/// One member's result for one input.
#[derive(Debug, Clone)]
pub struct MemberPrediction {
    /// Mean over the input's views.
    pub probabilities: Vec<f32>,
    /// The network's raw output (logits or probabilities) for each view, in view order.
    pub raw: Vec<Vec<f32>>,
    /// Time for every view, in milliseconds.
    pub ms: f64,
}

/// The ensemble's result for one input.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Weighted mean of the members' probabilities, in class order.
    pub probabilities: Vec<f32>,
    pub members: Vec<MemberPrediction>,
    pub decision: Decision,
}

/// An image prepared for the members: the same views (the input, then its mirrors) for each
/// distinct input spec of the manifest.
#[derive(Debug, Clone)]
pub struct Views {
    per_input: Vec<Vec<TValue>>,
}

impl Views {
    /// How many views each member runs on.
    pub fn per_member(&self) -> usize {
        self.per_input.first().map_or(0, Vec::len)
    }
}

/// The manifest and its loaded members.
#[derive(Debug)]
pub struct Ensemble {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    pub members: Vec<Member>,
    weights: Vec<f32>,
    /// The distinct input specs of the members, in order of first use.
    inputs: Vec<InputSpec>,
    /// Each member's index in `inputs`.
    member_inputs: Vec<usize>,
}

impl Ensemble {
    /// Loads the manifest at `manifest_path` and every member, refusing on any mismatch.
    pub fn load(manifest_path: &Path) -> Result<Ensemble, EnsembleError> {
        Ensemble::load_with(manifest_path, None)
    }

    /// Like [`Ensemble::load`]; with a public key, the manifest must also carry a valid
    /// signature (`<manifest>.sig`) by that key.
    pub fn load_with(
        manifest_path: &Path,
        key: Option<&PublicKey>,
    ) -> Result<Ensemble, EnsembleError> {
        let text = Manifest::read_text(manifest_path)?;
        if let Some(key) = key {
            key.verify_manifest(manifest_path, text.as_bytes())?;
        }
        let manifest = Manifest::parse(&text, manifest_path)?;
        let members = manifest
            .members
            .iter()
            .map(|spec| {
                let input = manifest.input_of(spec);
                Member::load(spec, manifest_path, input, manifest.classes.len())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let weights = manifest.normalised_weights();
        let (inputs, member_inputs) = manifest.input_groups();
        Ok(Ensemble {
            manifest,
            manifest_path: manifest_path.to_path_buf(),
            members,
            weights,
            inputs,
            member_inputs,
        })
    }

    /// Member weights, normalised to sum to one, in member order.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The input spec member `member` (its index) runs on.
    pub fn input_spec(&self, member: usize) -> &InputSpec {
        &self.inputs[self.member_inputs[member]]
    }

    /// The distinct input specs of the members, in order of first use.
    pub fn input_specs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// Member `member`'s model input for an upright RGB image.
    pub fn input_for(&self, member: usize, image: &RgbImage) -> TValue {
        let spec = self.input_spec(member);
        tensor_from_nchw(to_input_tensor(image, spec), spec)
    }

    /// The views of an upright RGB image that the members run on: for each distinct input spec,
    /// the prepared input, then its mirrors when the manifest asks for test-time augmentation.
    pub fn views_for(&self, image: &RgbImage) -> Views {
        self.views_with(
            image,
            self.manifest.inference.test_time_augmentation.views(),
        )
    }

    /// Like [`Ensemble::views_for`], with the given mirrors as the views.
    pub fn views_with(&self, image: &RgbImage, flips: &[Flip]) -> Views {
        let per_input = self
            .inputs
            .iter()
            .map(|spec| {
                let data = to_input_tensor(image, spec);
                let (width, height) = (spec.width as usize, spec.height as usize);
                flips
                    .iter()
                    .map(|&flip| tensor_from_nchw(flip_nchw(&data, width, height, flip), spec))
                    .collect()
            })
            .collect();
        Views { per_input }
    }

    /// Classifies the views of one input with every member and combines the results. When
    /// tract's executor is a thread pool, the member runs (one per member and view) share it
    /// concurrently; the results do not depend on it.
    pub fn predict(&self, views: &Views) -> Result<Prediction, InferenceError> {
        let temperature = self.manifest.decision.temperature.unwrap_or(1.0);
        if views.per_input.len() != self.inputs.len() {
            return Err(InferenceError {
                member: self.manifest.id(),
                message: format!(
                    "it was given views of {} input spec(s), not its {}; they were prepared for another ensemble",
                    views.per_input.len(),
                    self.inputs.len()
                ),
            });
        }
        let count = views.per_member();
        let runs = concurrently(self.members.len() * count, |run| {
            let (member, view) = (run / count, run % count);
            let input = &views.per_input[self.member_inputs[member]][view];
            let started = Instant::now();
            let raw = self.members[member].run_raw(input);
            (raw, started.elapsed().as_secs_f64() * 1e3)
        });
        let mut runs = runs.into_iter();
        let members = self
            .members
            .iter()
            .map(|member| {
                let mut raw = Vec::with_capacity(count);
                let mut ms = 0.0;
                for (output, run_ms) in runs.by_ref().take(count) {
                    raw.push(output?);
                    ms += run_ms;
                }
                let probabilities = member.mean_over_views(&raw, temperature)?;
                Ok(MemberPrediction {
                    probabilities,
                    raw,
                    ms,
                })
            })
            .collect::<Result<Vec<_>, InferenceError>>()?;
        let per_member: Vec<&[f32]> = members.iter().map(|m| m.probabilities.as_slice()).collect();
        let probabilities = decision::adjusted(
            decision::weighted_mean(&per_member, &self.weights),
            &self.manifest.decision,
        );
        let decision = Decision::new(&probabilities, &per_member, &self.manifest);
        Ok(Prediction {
            probabilities,
            members,
            decision,
        })
    }

    /// Preprocesses and classifies an upright RGB image.
    pub fn classify(&self, image: &RgbImage) -> Result<Prediction, InferenceError> {
        self.predict(&self.views_for(image))
    }
}

/// `task(0)`, ..., `task(count - 1)` in order: spawned on the pool of tract's current executor
/// when it is a thread pool, else run one after another on this thread.
fn concurrently<T: Send>(count: usize, task: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if let (true, Executor::MultiThread(pool)) = (count > 1, current_tract_executor()) {
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        let task = &task;
        pool.scope(|scope| {
            for (index, slot) in results.iter_mut().enumerate() {
                scope.spawn(move |_| *slot = Some(task(index)));
            }
        });
        return results.into_iter().flatten().collect();
    }
    (0..count).map(task).collect()
}

/// Wraps NCHW data of the spec's size as a tract input value.
pub fn tensor_from_nchw(data: Vec<f32>, spec: &InputSpec) -> TValue {
    let shape = [1, 3, spec.height as usize, spec.width as usize];
    tract_ndarray::Array4::from_shape_vec(shape, data)
        .expect("preprocessing yields exactly 3 * width * height values")
        .into_tensor()
        .into_tvalue()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tract_linalg::multithread::multithread_tract_scope;

    use super::*;
    use crate::preprocess::{load_image_file, ImageLimits};

    #[test]
    fn concurrent_tasks_keep_their_order() {
        let squares = |_| concurrently(20, |i| i * i);
        let pooled = multithread_tract_scope(Executor::multithread(3), || squares(()));
        assert_eq!(pooled, (0..20).map(|i| i * i).collect::<Vec<_>>());
    }

    /// Members and views spread over a thread pool give the results of a run one after
    /// another, bit for bit and in member and view order.
    #[test]
    fn members_on_a_thread_pool_give_the_sequential_results() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ensemble = Ensemble::load(&root.join("models/ensemble.toml")).unwrap();
        let image = load_image_file(
            &root.join("models/samples/ISIC_0024698.jpg"),
            &ImageLimits::default(),
        )
        .unwrap()
        .rgb;
        let views = ensemble.views_with(&image, &[Flip::None, Flip::Horizontal]);
        let sequential =
            multithread_tract_scope(Executor::SingleThread, || ensemble.predict(&views)).unwrap();
        let pooled =
            multithread_tract_scope(Executor::multithread(2), || ensemble.predict(&views)).unwrap();
        let raw = |p: &Prediction| p.members.iter().map(|m| m.raw.clone()).collect::<Vec<_>>();
        let sequential_raw = raw(&sequential);
        assert_ne!(sequential_raw[0], sequential_raw[1], "members must differ");
        assert_ne!(
            sequential_raw[0][0], sequential_raw[0][1],
            "views must differ"
        );
        assert_eq!(raw(&pooled), sequential_raw);
        assert_eq!(pooled.probabilities, sequential.probabilities);
    }
}
