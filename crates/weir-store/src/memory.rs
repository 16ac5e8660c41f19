//! [`MemorySource`]: resources held in memory only, for a configuration given as YAML text (an
//! embedder's, a test's). Admin API writes apply at once and are lost at exit.

use crate::set::ResourceSet;
use crate::source::{Backend, Base, Change, Sink, StoreError};
use crate::validate::Validator;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};

/// Resources in memory, applied to a [`Sink`] on every Admin API write.
pub struct MemorySource {
    sink: Arc<dyn Sink>,
    validator: Validator,
    set: Mutex<Arc<ResourceSet>>,
}

impl MemorySource {
    /// Resources and settings of `doc` (a configuration document), applied to `sink` on writes.
    pub fn new(doc: &serde_json::Value, validator: Validator, sink: Arc<dyn Sink>) -> Self {
        MemorySource {
            sink,
            validator,
            set: Mutex::new(Arc::new(ResourceSet::from_document(doc))),
        }
    }
}

#[async_trait]
impl Backend for MemorySource {
    fn current(&self) -> Arc<ResourceSet> {
        Arc::clone(&self.set.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn base(&self) -> Result<Base, StoreError> {
        Ok(Base {
            set: (*self.current()).clone(),
            validator: self.validator.clone(),
            revision: 0,
        })
    }

    async fn commit(
        &self,
        base: &Base,
        _change: &Change,
        resulting: &ResourceSet,
    ) -> Result<(), StoreError> {
        let config = base
            .validator
            .check(resulting)
            .map_err(StoreError::Invalid)?;
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(resulting.clone());
        self.sink.apply(&config.resources);
        self.sink.loaded(crate::source::Origin::Admin, true);
        Ok(())
    }
}
