//! Run-time choice of burn backend: one model code, three engines.

use anyhow::bail;
use burn::prelude::*;

/// The burn-ndarray CPU device: the default backend, which burn 0.22 marks deprecated in
/// favour of its new `flex` backend.
#[allow(deprecated)]
pub fn ndarray_device() -> Device {
    Device::ndarray()
}

/// The engines training can run on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[value(rename_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// burn-ndarray on the CPU (pure Rust; the default, used by CI).
    Ndarray,
    /// libtorch on the CPU (feature `tch`).
    Tch,
    /// libtorch on CUDA device 0 (feature `tch`).
    TchCuda,
    /// burn's native CUDA backend on device 0 (feature `cuda`).
    Cuda,
}

impl BackendKind {
    /// The device for this backend, or an error naming the cargo feature it needs. (burn 0.22
    /// marks ndarray and tch deprecated; they are the backends this project names.)
    #[allow(deprecated)]
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            BackendKind::Ndarray => Ok(ndarray_device()),
            #[cfg(feature = "tch")]
            BackendKind::Tch => Ok(Device::libtorch()),
            #[cfg(feature = "tch")]
            BackendKind::TchCuda => Ok(Device::libtorch_cuda(0usize)),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Ok(Device::cuda(0usize)),
            #[allow(unreachable_patterns)]
            other => bail!(
                "backend {other:?} is not built in; rebuild with `--features {}` ({})",
                other.feature(),
                other.needs()
            ),
        }
    }

    fn feature(self) -> &'static str {
        match self {
            BackendKind::Ndarray => "(none)",
            BackendKind::Tch | BackendKind::TchCuda => "tch",
            BackendKind::Cuda => "cuda",
        }
    }

    fn needs(self) -> &'static str {
        match self {
            BackendKind::Tch | BackendKind::TchCuda => {
                "needs `pip install torch==2.9.0` and LIBTORCH_USE_PYTORCH=1 at build time"
            }
            BackendKind::Cuda => "needs an NVIDIA driver and CUDA toolkit at run time",
            BackendKind::Ndarray => "always available",
        }
    }
}
