//! Deploy-time checks: a module must be a valid component of bounded size that imports only
//! Baton's interfaces, exports Baton's handler and, if it declares its functions, declares
//! them well ([`crate::functions`]). Deterministic, so the leader's check before
//! proposing and every replica's check at apply agree.

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::functions::declared_functions;
use crate::runtime::{Pre, Runtime};
use crate::{ModuleHash, module_hash};
use baton_limits::MODULE_BYTES_MAX;

/// The only imports a module may have (either contract version).
const ALLOWED_IMPORTS: [&str; 4] = [
    "baton:module/store@0.2.0",
    "baton:module/context@0.2.0",
    "baton:module/store@0.1.0",
    "baton:module/context@0.1.0",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    #[error("module of {bytes} bytes exceeds the limit of {bytes_max}")]
    TooLarge { bytes: usize, bytes_max: usize },
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "module imports {0}, which Baton does not provide (allowed: baton:module/store, \
         baton:module/context; build for wasm32-unknown-unknown, not WASI)"
    )]
    ForbiddenImport(String),
    #[error("module does not implement Baton's world: {0}")]
    WrongExports(String),
    #[error("module's declared functions are invalid: {0}")]
    BadFunctions(String),
}

/// A module that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub hash: ModuleHash,
    /// Names of the component's exports.
    pub exports: Vec<String>,
}

fn check_size(bytes: &[u8]) -> Result<(), DeployError> {
    if bytes.len() > MODULE_BYTES_MAX {
        return Err(DeployError::TooLarge {
            bytes: bytes.len(),
            bytes_max: MODULE_BYTES_MAX,
        });
    }
    Ok(())
}

impl Runtime {
    /// Checks `bytes` and compiles them into the cache, so the first call pays no compile.
    pub fn validate(&self, bytes: &[u8]) -> Result<Validated, DeployError> {
        // Size first: hashing what will be refused anyway is wasted work.
        check_size(bytes)?;
        self.validate_hashed(bytes, module_hash(bytes))
    }

    /// [`Runtime::validate`] for a caller that has already hashed `bytes` (`hash` must be
    /// `module_hash(bytes)`).
    pub fn validate_hashed(
        &self,
        bytes: &[u8],
        hash: ModuleHash,
    ) -> Result<Validated, DeployError> {
        check_size(bytes)?;
        if let Some(known) = self.validated.get(&hash) {
            return Ok(known);
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| DeployError::Invalid(e.to_string()))?;
        let ty = component.component_type();
        for (name, item) in ty.imports(&self.engine) {
            let is_instance = matches!(item.ty, ComponentItem::ComponentInstance(_));
            if !is_instance || !ALLOWED_IMPORTS.contains(&name) {
                return Err(DeployError::ForbiddenImport(name.to_string()));
            }
        }
        // Component::new has checked the bytes are a well-formed component.
        declared_functions(bytes).map_err(DeployError::BadFunctions)?;
        let exports = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(Pre::new)
            .map_err(|e| DeployError::WrongExports(format!("{e:#}")))?;
        self.compiled.insert(hash, pre);
        let validated = Validated { hash, exports };
        self.validated.insert(hash, validated.clone());
        Ok(validated)
    }
}
