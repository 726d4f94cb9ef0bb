//! keygate-control (in progress).
