//! keygate-gateway (in progress).
