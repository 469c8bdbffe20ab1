//! Generated gRPC types and services of Hangar. Nothing here holds logic.

/// Block service of data nodes: content-addressed blocks.
pub mod block {
    tonic::include_proto!("hangar.block");
}

/// Metadata service of data nodes: replicated table entries.
pub mod metadata {
    tonic::include_proto!("hangar.metadata");
}

/// Values stored in the metadata tables (buckets, keys, objects, ...).
pub mod model {
    tonic::include_proto!("hangar.model");
}

/// Control-plane services: membership, layout, administration.
pub mod control {
    tonic::include_proto!("hangar.control");
}
