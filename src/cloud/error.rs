//! Errors from cloud calls and their classification, shared by every kind's reconcile: retry
//! (transient), wait (quota), or stop (the request itself is wrong).

/// How a failed call should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ErrorCategory {
    /// Transient (`backendError`, `internalError`, 5xx, `rateLimitExceeded`, `jobRateLimitExceeded`,
    /// connection errors): retry with backoff.
    Retryable,
    /// A quota is used up (`quotaExceeded`): retrying soon does not help; wait and requeue.
    Wait,
    /// The request is wrong or not permitted (`invalid`, `notFound`, `accessDenied`, …): retrying the
    /// same request fails the same way.
    Terminal,
}

/// A failed call to a Google Cloud API.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The API answered with an error status.
    #[error("{api} {operation}: HTTP {status} {reason}: {message}")]
    Api {
        /// `bigquery`, `storage`, …
        api: &'static str,
        /// What was attempted, e.g. `datasets.get project.dataset`.
        operation: String,
        /// HTTP status.
        status: u16,
        /// Google's error reason (`notFound`, `rateLimitExceeded`, …), or the status text.
        reason: String,
        /// Google's error message.
        message: String,
    },
    /// The request did not complete (connection refused or reset, timeout).
    #[error("{api} {operation}: {source}")]
    Transport {
        /// `bigquery`, `storage`, …
        api: &'static str,
        /// What was attempted.
        operation: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer could not be understood.
    #[error("{api} {operation}: unexpected response: {message}")]
    Decode {
        /// `bigquery`, `storage`, …
        api: &'static str,
        /// What was attempted.
        operation: String,
        /// What was wrong with it.
        message: String,
    },
    /// No credentials could be obtained.
    #[error("credentials: {0}")]
    Auth(String),
}

impl CloudError {
    /// How to handle this error.
    pub fn category(&self) -> ErrorCategory {
        match self {
            CloudError::Api { status, reason, .. } => classify(*status, reason),
            CloudError::Transport { .. } => ErrorCategory::Retryable,
            CloudError::Decode { .. } | CloudError::Auth(_) => ErrorCategory::Terminal,
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        self.category() == ErrorCategory::Retryable
    }

    /// HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CloudError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the API said the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// Classifies a Google API error by its reason first (BigQuery's `rateLimitExceeded` comes with 403
/// and `jobRateLimitExceeded` with 400), then by status.
pub fn classify(status: u16, reason: &str) -> ErrorCategory {
    match reason {
        "backendError"
        | "internalError"
        | "rateLimitExceeded"
        | "jobRateLimitExceeded"
        | "jobBackendError"
        | "jobInternalError"
        | "tableUnavailable" => ErrorCategory::Retryable,
        "quotaExceeded" => ErrorCategory::Wait,
        _ if status == 429 || status == 408 || status >= 500 => ErrorCategory::Retryable,
        _ => ErrorCategory::Terminal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_win_over_status() {
        assert_eq!(classify(403, "rateLimitExceeded"), ErrorCategory::Retryable);
        assert_eq!(classify(400, "jobRateLimitExceeded"), ErrorCategory::Retryable);
        assert_eq!(classify(403, "quotaExceeded"), ErrorCategory::Wait);
        assert_eq!(classify(403, "accessDenied"), ErrorCategory::Terminal);
        assert_eq!(classify(503, ""), ErrorCategory::Retryable);
        assert_eq!(classify(429, "Too Many Requests"), ErrorCategory::Retryable);
        assert_eq!(classify(404, "notFound"), ErrorCategory::Terminal);
        assert_eq!(classify(409, "duplicate"), ErrorCategory::Terminal);
    }
}
