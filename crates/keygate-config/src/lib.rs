//! keygate-config (in progress).
