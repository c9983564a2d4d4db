//! Builds the TLS middlewares (`passTLSClientCert`) from their validated configuration.

use std::sync::Arc;

use l7::middleware::Middleware;
use l7::middleware::pass_tls_client_cert::{CertInfoFields, DnFields, PassTlsClientCert};

use crate::config::dynamic::{DistinguishedNameInfo, HttpMiddleware};

/// The middleware `m` defines if it is one of this module's types (`None` otherwise).
pub(super) fn build(
    _name: &str,
    m: &HttpMiddleware,
) -> Option<Result<Arc<dyn Middleware>, String>> {
    let pass = m.pass_tls_client_cert.as_ref()?;
    let info = pass.info.as_ref().map(|i| CertInfoFields {
        not_after: i.not_after,
        not_before: i.not_before,
        sans: i.sans,
        serial_number: i.serial_number,
        subject: i.subject.as_ref().map(dn_fields),
        issuer: i.issuer.as_ref().map(dn_fields),
    });
    Some(Ok(Arc::new(PassTlsClientCert {
        pem: pass.pem,
        info,
    })))
}

fn dn_fields(d: &DistinguishedNameInfo) -> DnFields {
    DnFields {
        country: d.country,
        province: d.province,
        locality: d.locality,
        organization: d.organization,
        organizational_unit: d.organizational_unit,
        common_name: d.common_name,
        serial_number: d.serial_number,
        domain_component: d.domain_component,
    }
}
