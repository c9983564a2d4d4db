//! `passTLSClientCert{pem, info{…}}`: tells the server which certificate the client
//! presented in the TLS handshake, in `X-Forwarded-Tls-Client-Cert` (the certificates
//! themselves) and `X-Forwarded-Tls-Client-Cert-Info` (selected fields).
//!
//! Values are Traefik's, byte for byte (checked against Traefik 3.7): every certificate the
//! client sent, leaf first, joined with `,`. `pem` gives each one's base64 DER (the PEM body
//! without its armour or line breaks); `info` gives, for each, `;`-separated
//! `Subject="…"`, `Issuer="…"`, `SerialNumber="…"`, `NB="…"`, `NA="…"`, `SAN="…"` as
//! selected, the whole value URL query-escaped. Values the client sent in either header are
//! removed first, so the server only ever sees what this handshake proved; a request
//! without a client certificate reaches it with neither header.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use rustls_pki_types::CertificateDer;
use x509_parser::asn1_rs::Tag;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_DOMAIN_COMPONENT, OID_X509_COMMON_NAME, OID_X509_COUNTRY_NAME, OID_X509_LOCALITY_NAME,
    OID_X509_ORGANIZATION_NAME, OID_X509_ORGANIZATIONAL_UNIT, OID_X509_SERIALNUMBER,
    OID_X509_STATE_OR_PROVINCE_NAME,
};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use super::Middleware;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler};
use crate::server::TlsInfo;

pub const X_FORWARDED_TLS_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-tls-client-cert");
pub const X_FORWARDED_TLS_CLIENT_CERT_INFO: HeaderName =
    HeaderName::from_static("x-forwarded-tls-client-cert-info");

/// A configured `passTLSClientCert`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassTlsClientCert {
    /// Pass the certificates themselves.
    pub pem: bool,
    /// Pass these fields of each certificate; `None` passes no info header.
    pub info: Option<CertInfoFields>,
}

/// The certificate fields `info` selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertInfoFields {
    pub not_after: bool,
    pub not_before: bool,
    pub sans: bool,
    pub serial_number: bool,
    pub subject: Option<DnFields>,
    pub issuer: Option<DnFields>,
}

/// The parts of a distinguished name `info.subject` / `info.issuer` select.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnFields {
    pub country: bool,
    pub province: bool,
    pub locality: bool,
    pub organization: bool,
    pub organizational_unit: bool,
    pub common_name: bool,
    /// The name's `serialNumber` attribute (not the certificate's serial number).
    pub serial_number: bool,
    pub domain_component: bool,
}

impl Middleware for PassTlsClientCert {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Pass {
            config: self.clone(),
            next,
        })
    }
}

struct Pass {
    config: PassTlsClientCert,
    next: SharedHandler,
}

impl Handler for Pass {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let certificates = request
            .extensions()
            .get::<TlsInfo>()
            .and_then(|tls| tls.peer_certificates.clone())
            .filter(|chain| !chain.is_empty());
        let headers = request.headers_mut();
        headers.remove(X_FORWARDED_TLS_CLIENT_CERT);
        headers.remove(X_FORWARDED_TLS_CLIENT_CERT_INFO);
        if let Some(chain) = certificates {
            // Base64 and URL escaping leave nothing a header value cannot hold.
            if self.config.pem
                && let Ok(value) = HeaderValue::try_from(pem_value(&chain))
            {
                headers.insert(X_FORWARDED_TLS_CLIENT_CERT, value);
            }
            if let Some(fields) = &self.config.info
                && let Ok(value) = HeaderValue::try_from(query_escape(&info_value(fields, &chain)))
            {
                headers.insert(X_FORWARDED_TLS_CLIENT_CERT_INFO, value);
            }
        }
        self.next.call(request)
    }
}

/// The `X-Forwarded-Tls-Client-Cert` value: each certificate's DER in base64, joined by `,`.
pub fn pem_value(chain: &[CertificateDer<'_>]) -> String {
    let encoded: Vec<String> = chain.iter().map(|cert| STANDARD.encode(cert)).collect();
    encoded.join(",")
}

/// The `X-Forwarded-Tls-Client-Cert-Info` value before escaping: one `;`-separated entry
/// per certificate, joined by `,` (a certificate with nothing to say gives an empty entry,
/// as in Traefik).
pub fn info_value(fields: &CertInfoFields, chain: &[CertificateDer<'_>]) -> String {
    let entries: Vec<String> = chain
        .iter()
        .map(|der| {
            // The handshake already parsed every certificate; one that fails here says nothing.
            x509_parser::parse_x509_certificate(der)
                .map(|(_, cert)| cert_info(fields, &cert))
                .unwrap_or_default()
        })
        .collect();
    entries.join(",")
}

fn cert_info(fields: &CertInfoFields, cert: &X509Certificate<'_>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (name, dn, selected) in [
        ("Subject", cert.subject(), fields.subject),
        ("Issuer", cert.issuer(), fields.issuer),
    ] {
        if let Some(selected) = selected {
            let text = dn_text(&selected, dn);
            if !text.is_empty() {
                parts.push(format!("{name}=\"{text}\""));
            }
        }
    }
    if fields.serial_number {
        parts.push(format!("SerialNumber=\"{}\"", cert.tbs_certificate.serial));
    }
    // Go prints the Unix time as an unsigned number; a date before 1970 wraps the same way.
    let validity = cert.validity();
    if fields.not_before {
        parts.push(format!("NB=\"{}\"", validity.not_before.timestamp() as u64));
    }
    if fields.not_after {
        parts.push(format!("NA=\"{}\"", validity.not_after.timestamp() as u64));
    }
    if fields.sans {
        let sans = sans(cert);
        if !sans.is_empty() {
            parts.push(format!("SAN=\"{}\"", sans.join(",")));
        }
    }
    parts.join(";")
}

/// The selected parts of a name, in Traefik's order (DC, C, ST, L, O, OU, SN, CN) whatever
/// the certificate's, joined by `,`. Several values of one kind each appear (CN and SN: the
/// last one, as Go keeps it); empty values are left out (DC aside, as in Traefik).
fn dn_text(selected: &DnFields, name: &X509Name<'_>) -> String {
    let values = |wanted: bool, oid| -> Vec<Cow<'_, str>> {
        if !wanted {
            return Vec::new();
        }
        name.iter_attributes()
            .filter(|atv| *atv.attr_type() == oid)
            .filter_map(string_value)
            .collect()
    };
    let last = |wanted: bool, oid| values(wanted, oid).pop().into_iter().collect::<Vec<_>>();
    let groups = [
        (
            "DC",
            values(selected.domain_component, OID_DOMAIN_COMPONENT),
        ),
        ("C", values(selected.country, OID_X509_COUNTRY_NAME)),
        (
            "ST",
            values(selected.province, OID_X509_STATE_OR_PROVINCE_NAME),
        ),
        ("L", values(selected.locality, OID_X509_LOCALITY_NAME)),
        (
            "O",
            values(selected.organization, OID_X509_ORGANIZATION_NAME),
        ),
        (
            "OU",
            values(selected.organizational_unit, OID_X509_ORGANIZATIONAL_UNIT),
        ),
        ("SN", last(selected.serial_number, OID_X509_SERIALNUMBER)),
        ("CN", last(selected.common_name, OID_X509_COMMON_NAME)),
    ];
    let mut parts: Vec<String> = Vec::new();
    for (key, group) in groups {
        for value in group {
            if !value.is_empty() || key == "DC" {
                parts.push(format!("{key}={value}"));
            }
        }
    }
    parts.join(",")
}

/// An attribute's text, for the string types Go reads in names: UTF-8 and its ASCII subsets
/// as they are, a T61String as Latin-1 and a BMPString as UTF-16, as Go decodes them.
fn string_value<'a>(atv: &'a AttributeTypeAndValue<'_>) -> Option<Cow<'a, str>> {
    let bytes = atv.as_slice();
    match atv.attr_value().tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(bytes).ok().map(Cow::Borrowed)
        }
        Tag::T61String => Some(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())),
        Tag::BmpString => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            // Go drops one trailing NUL character.
            let bytes = bytes.strip_suffix(&[0, 0]).unwrap_or(bytes);
            let units = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            let text: String = char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect();
            Some(Cow::Owned(text))
        }
        _ => None,
    }
}

/// The subject alternative names in Go's order: DNS names, e-mail addresses, IP addresses,
/// then URIs, each group in certificate order.
fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    let names = &extension.value.general_names;
    let mut out: Vec<String> = Vec::new();
    out.extend(names.iter().filter_map(|n| match n {
        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        _ => None,
    }));
    out.extend(names.iter().filter_map(|n| match n {
        GeneralName::RFC822Name(email) => Some((*email).to_owned()),
        _ => None,
    }));
    out.extend(names.iter().filter_map(|n| match n {
        GeneralName::IPAddress(bytes) => ip_text(bytes),
        _ => None,
    }));
    out.extend(names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(uri_text(uri)),
        _ => None,
    }));
    out
}

/// An IP address as Go prints it: an IPv4-mapped IPv6 address in dotted form.
fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(ip.to_string())
}

/// A URI with its scheme lower-cased, as Go's URL parser leaves it.
fn uri_text(uri: &str) -> String {
    match uri.split_once(':') {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            format!("{}:{rest}", scheme.to_ascii_lowercase())
        }
        _ => uri.to_owned(),
    }
}

/// Go's `url.QueryEscape`: letters, digits and `-_.~` stay, a space becomes `+`, every
/// other byte (of the UTF-8) `%XX` (upper-case hex).
pub fn query_escape(text: &str) -> String {
    let bytes = text.as_bytes();
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::StatusCode;

    use super::*;
    use crate::handler::{ClientInfo, empty_body, full_body};

    /// A client certificate with every field `info` can show, issued by a CA with its own.
    struct Issued {
        chain: Vec<CertificateDer<'static>>,
    }

    fn issued() -> Issued {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let dn = &mut ca.distinguished_name;
        dn.push(
            rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            rcgen::DnValue::Ia5String("org".try_into().unwrap()),
        );
        dn.push(rcgen::DnType::CountryName, "FR");
        dn.push(rcgen::DnType::OrganizationName, "Test CA Org");
        dn.push(rcgen::DnType::OrganizationalUnitName, "CA Unit");
        dn.push(rcgen::DnType::CommonName, "Test Root CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);

        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec![
            "client.example.com".to_owned(),
            "*.wild.example.com".to_owned(),
        ])
        .unwrap();
        leaf.subject_alt_names.extend([
            rcgen::SanType::Rfc822Name("me@example.com".try_into().unwrap()),
            rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()),
            rcgen::SanType::IpAddress("::1".parse().unwrap()),
            rcgen::SanType::URI("spiffe://example.org/client?x=1".try_into().unwrap()),
        ]);
        let dn = &mut leaf.distinguished_name;
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::StateOrProvinceName, "California");
        dn.push(rcgen::DnType::LocalityName, "San Francisco");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        dn.push(rcgen::DnType::OrganizationalUnitName, "Eng");
        dn.push(rcgen::DnType::CommonName, "client one");
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "SUBJ-42");
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x12, 0x34]));
        leaf.not_before = rcgen::date_time_ymd(2026, 11, 28);
        leaf.not_after = rcgen::date_time_ymd(2026, 12, 28);
        let leaf_cert = leaf.signed_by(&key, &issuer).unwrap();
        Issued {
            chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        }
    }

    const EVERYTHING: DnFields = DnFields {
        country: true,
        province: true,
        locality: true,
        organization: true,
        organizational_unit: true,
        common_name: true,
        serial_number: true,
        domain_component: true,
    };

    #[test]
    fn info_lists_every_field_in_traefik_order_for_each_certificate() {
        let fields = CertInfoFields {
            not_after: true,
            not_before: true,
            sans: true,
            serial_number: true,
            subject: Some(EVERYTHING),
            issuer: Some(DnFields {
                organizational_unit: false,
                ..EVERYTHING
            }),
        };
        let chain = issued().chain;
        let info = info_value(&fields, &chain);
        let (leaf, ca) = info.split_once("\",Subject=").unwrap();
        assert_eq!(
            leaf,
            "Subject=\"C=US,ST=California,L=San Francisco,O=Acme, Inc.,OU=Eng,SN=SUBJ-42,CN=client one\";\
             Issuer=\"DC=org,C=FR,O=Test CA Org,CN=Test Root CA\";\
             SerialNumber=\"4660\";NB=\"1795824000\";NA=\"1798416000\";\
             SAN=\"client.example.com,*.wild.example.com,me@example.com,10.0.0.1,::1,spiffe://example.org/client?x=1"
        );
        assert!(
            ca.starts_with("\"DC=org,C=FR,O=Test CA Org,OU=CA Unit,CN=Test Root CA\";Issuer=\"DC=org,C=FR,O=Test CA Org,CN=Test Root CA\";SerialNumber="),
            "{ca}"
        );
        assert!(!ca.contains("SAN="), "{ca}");
    }

    fn testdata(name: &str) -> String {
        let path = format!(
            "{}/testdata/pass-tls-client-cert/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path).unwrap()
    }

    /// The chain and the values Traefik 3.7 gave for it (see `testdata/README.md`).
    fn traefik_chain() -> Vec<CertificateDer<'static>> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(testdata("client-chain.pem").as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn values_match_traefik_byte_for_byte() {
        let chain = traefik_chain();
        assert_eq!(chain.len(), 2);
        assert_eq!(
            pem_value(&chain),
            testdata("traefik-3.7-pem.txt").trim_end()
        );
        let fields = CertInfoFields {
            not_after: true,
            not_before: true,
            sans: true,
            serial_number: true,
            subject: Some(EVERYTHING),
            issuer: Some(DnFields {
                organizational_unit: false,
                ..EVERYTHING
            }),
        };
        assert_eq!(
            query_escape(&info_value(&fields, &chain)),
            testdata("traefik-3.7-info.txt").trim_end()
        );
    }

    #[test]
    fn a_certificate_with_nothing_selected_leaves_an_empty_entry() {
        let fields = CertInfoFields {
            sans: true,
            ..CertInfoFields::default()
        };
        let info = info_value(&fields, &issued().chain);
        assert!(info.starts_with("SAN=\"client.example.com,"), "{info}");
        assert!(info.ends_with("\","), "{info}");
    }

    #[test]
    fn query_escape_is_gos() {
        assert_eq!(
            query_escape("Subject=\"CN=a b,O=*\";SAN=\"me@x:1/?\""),
            "Subject%3D%22CN%3Da+b%2CO%3D%2A%22%3BSAN%3D%22me%40x%3A1%2F%3F%22"
        );
        assert_eq!(query_escape("-_.~Az09é"), "-_.~Az09%C3%A9");
    }

    #[test]
    fn pem_value_is_the_base64_der_of_each_certificate() {
        let chain = issued().chain;
        let value = pem_value(&chain);
        let parts: Vec<&str> = value.split(',').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(STANDARD.decode(parts[0]).unwrap(), chain[0].as_ref());
        assert_eq!(STANDARD.decode(parts[1]).unwrap(), chain[1].as_ref());
    }

    #[test]
    fn ipv4_mapped_addresses_print_dotted_and_schemes_lower_case() {
        let mapped = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets();
        assert_eq!(ip_text(&mapped).unwrap(), "192.0.2.1");
        assert_eq!(ip_text(&[1, 2, 3]), None);
        assert_eq!(uri_text("HTTPS://Example.COM/A"), "https://Example.COM/A");
        assert_eq!(uri_text("urn-less"), "urn-less");
    }

    /// Answers with the two headers as it received them (`-` when absent).
    struct Seen;

    impl Handler for Seen {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let show = |name: &HeaderName| {
                request
                    .headers()
                    .get(name)
                    .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
            };
            let body = format!(
                "{}\n{}",
                show(&X_FORWARDED_TLS_CLIENT_CERT),
                show(&X_FORWARDED_TLS_CLIENT_CERT_INFO)
            );
            Box::pin(async move { Response::new(full_body(body)) })
        }
    }

    async fn pass(
        config: PassTlsClientCert,
        chain: Option<Vec<CertificateDer<'static>>>,
    ) -> (String, String) {
        let handler = config.wrap(Arc::new(Seen));
        let mut request = Request::new(empty_body());
        request.headers_mut().insert(
            X_FORWARDED_TLS_CLIENT_CERT,
            HeaderValue::from_static("spoof"),
        );
        request.headers_mut().insert(
            X_FORWARDED_TLS_CLIENT_CERT_INFO,
            HeaderValue::from_static("spoof"),
        );
        let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
        request.extensions_mut().insert(ClientInfo {
            peer: addr,
            local: addr,
            tls: true,
            entrypoint: Arc::from("websecure"),
            notes: None,
        });
        request.extensions_mut().insert(TlsInfo {
            sni: None,
            option: Arc::from("default"),
            peer_certificates: chain.map(Arc::from),
            params: None,
        });
        let response = handler.call(request).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let (pem, info) = body.split_once('\n').unwrap();
        (pem.to_owned(), info.to_owned())
    }

    #[tokio::test]
    async fn headers_carry_the_handshake_certificate_and_never_the_clients() {
        let chain = issued().chain;
        let config = PassTlsClientCert {
            pem: true,
            info: Some(CertInfoFields {
                subject: Some(DnFields {
                    common_name: true,
                    ..DnFields::default()
                }),
                ..CertInfoFields::default()
            }),
        };
        let (pem, info) = pass(config.clone(), Some(chain.clone())).await;
        assert_eq!(pem, pem_value(&chain));
        assert_eq!(
            info,
            "Subject%3D%22CN%3Dclient+one%22%2CSubject%3D%22CN%3DTest+Root+CA%22"
        );
        let (pem, info) = pass(config, None).await;
        assert_eq!((pem.as_str(), info.as_str()), ("-", "-"));
    }

    #[tokio::test]
    async fn only_the_selected_header_is_set() {
        let chain = issued().chain;
        let pem_only = PassTlsClientCert {
            pem: true,
            info: None,
        };
        let (pem, info) = pass(pem_only, Some(chain)).await;
        assert_ne!(pem, "-");
        assert_eq!(info, "-");
    }
}
