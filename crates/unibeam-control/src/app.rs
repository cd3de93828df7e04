//! What every handler shares: the stores, the token, and a way to run the
//! lifecycle library's blocking calls.

use crate::error::ApiError;
use crate::token::Token;
use unibeam_lifecycle::volumes::VolumeStore;
use unibeam_vmm::state::{InstanceName, Store};

#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub volumes: VolumeStore,
    pub token: Token,
}

impl App {
    pub fn new(store: Store, token: Token) -> App {
        App {
            volumes: VolumeStore::beside(&store),
            store,
            token,
        }
    }

    #[cfg(test)]
    pub fn for_tests(token: String) -> App {
        App::new(
            Store {
                root: std::path::PathBuf::from("/nonexistent/instances"),
            },
            Token::for_tests(token),
        )
    }
}

/// Runs `work` (a lifecycle call: file I/O, waits, distribution calls)
/// on tokio's blocking pool, off the threads that serve requests.
pub async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await?
}

/// An instance name from a URL path, checked like the CLI checks it.
pub fn instance_name(raw: &str) -> Result<InstanceName, ApiError> {
    Ok(InstanceName::parse(raw)?)
}
