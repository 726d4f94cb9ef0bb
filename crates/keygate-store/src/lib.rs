//! keygate-store (in progress).
