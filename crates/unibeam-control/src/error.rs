//! How a failure reaches an API client: a status that says whose fault
//! it is, and `{"error": "..."}` with the whole chain on one line.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use unibeam_dist::DistError;
use unibeam_lifecycle::instances::InstancesError;
use unibeam_lifecycle::logs::LogsError;
use unibeam_lifecycle::overview::OverviewError;
use unibeam_lifecycle::remote::RemoteError;
use unibeam_lifecycle::stats::StatsError;
use unibeam_lifecycle::volumes::VolumesError;
use unibeam_vmm::chain::error_chain;
use unibeam_vmm::state::StateError;

/// A failed API call.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A parameter out of its bounds, or otherwise not valid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn from_error(status: StatusCode, e: &dyn std::error::Error) -> ApiError {
        ApiError::new(status, error_chain(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

fn state_status(e: &StateError) -> StatusCode {
    match e {
        StateError::NoSuchInstance(_) => StatusCode::NOT_FOUND,
        StateError::BadName(_) | StateError::BadRestart(_) => StatusCode::BAD_REQUEST,
        StateError::NameInUse(_) | StateError::Broken { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> ApiError {
        ApiError::from_error(state_status(&e), &e)
    }
}

fn logs_status(e: &LogsError) -> StatusCode {
    match e {
        LogsError::State(s) => state_status(s),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<InstancesError> for ApiError {
    fn from(e: InstancesError) -> ApiError {
        let status = match &e {
            InstancesError::State(s) => state_status(s),
            InstancesError::Running(_)
            | InstancesError::AlreadyRunning(_)
            | InstancesError::Foreground(_)
            | InstancesError::BootFileMissing(_)
            | InstancesError::ExitedAtOnce(..)
            | InstancesError::Ports(_)
            | InstancesError::Drive(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::from_error(status, &e)
    }
}

impl From<RemoteError> for ApiError {
    fn from(e: RemoteError) -> ApiError {
        let status = match &e {
            RemoteError::State(s) => state_status(s),
            RemoteError::NotRunning(_) | RemoteError::NoDist(_) => StatusCode::CONFLICT,
            RemoteError::Dist {
                source: DistError::Syntax(_) | DistError::Raised(_),
                ..
            } => StatusCode::UNPROCESSABLE_ENTITY,
            // The node is starting, stopping or too busy to answer in
            // time: the instance's state, not a fault of the dashboard.
            RemoteError::Dist { .. } => StatusCode::CONFLICT,
            RemoteError::Cookie(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::from_error(status, &e)
    }
}

impl From<OverviewError> for ApiError {
    fn from(e: OverviewError) -> ApiError {
        let status = match &e {
            OverviewError::BadClusterName(_) => StatusCode::BAD_REQUEST,
            OverviewError::NoSuchCluster(_) => StatusCode::NOT_FOUND,
            OverviewError::Logs(l) => logs_status(l),
        };
        ApiError::from_error(status, &e)
    }
}

impl From<LogsError> for ApiError {
    fn from(e: LogsError) -> ApiError {
        ApiError::from_error(logs_status(&e), &e)
    }
}

impl From<StatsError> for ApiError {
    fn from(e: StatsError) -> ApiError {
        let status = match &e {
            StatsError::State(s) => state_status(s),
            StatsError::BadInterval(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::from_error(status, &e)
    }
}

impl From<VolumesError> for ApiError {
    fn from(e: VolumesError) -> ApiError {
        let status = match &e {
            VolumesError::NoSuchVolume(_) => StatusCode::NOT_FOUND,
            VolumesError::Used { .. } | VolumesError::Exists(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::from_error(status, &e)
    }
}

/// A blocking library call that panicked or was cancelled.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::from_error(StatusCode::INTERNAL_SERVER_ERROR, &e)
    }
}
