//! The engine's one error type: what went wrong, in words a user can act on.

#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// A setting that cannot work with this data.
    Config(String),
    /// Mismatched sizes; the message names both.
    Shape(String),
    /// The loss is NaN or infinite; the model was not updated.
    NonFinite(String),
    /// Reading from or running on the device failed (e.g. a lost GPU).
    Device(String),
    Checkpoint(String),
    /// A command (pause, stop) arrived during an E-step, which was dropped to run again later.
    Interrupted,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Config(m) => write!(f, "settings: {m}"),
            EngineError::Shape(m) => write!(f, "size mismatch: {m}"),
            EngineError::NonFinite(m) => write!(f, "training diverged: {m}"),
            EngineError::Device(m) => write!(f, "device: {m}"),
            EngineError::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            EngineError::Interrupted => f.write_str("interrupted by a command"),
        }
    }
}

impl std::error::Error for EngineError {}
