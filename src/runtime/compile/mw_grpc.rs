//! The gRPC middleware of a snapshot: `grpcWeb`, translated from its validated configuration
//! into its `l7::middleware` spec.

use std::sync::Arc;

use l7::middleware::Middleware;
use l7::middleware::grpc_web::GrpcWeb;

use crate::config::dynamic::HttpMiddleware;

/// The gRPC middleware `m` is, built; `None` when it is of another type.
pub(super) fn build(m: &HttpMiddleware) -> Option<Result<Arc<dyn Middleware>, String>> {
    let grpc_web = m.grpc_web.as_ref()?;
    Some(Ok(Arc::new(GrpcWeb {
        allow_origins: grpc_web.allow_origins.clone(),
    })))
}
