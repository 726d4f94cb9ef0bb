//! keygate-functions (in progress).
