//! Keys and certificates made at test time (nothing private is committed):
//! a test CA and a server certificate for `TestStore::start_tls`, and RS256 / ES256
//! signing keys with their public halves as PEM and JWK.

use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test, and a server certificate it signed.
pub struct TestCa {
    /// The CA certificate, PEM: what `upstream.ca_file` points at.
    pub ca_pem: String,
    /// A rustls server configuration presenting the signed certificate.
    pub server: Arc<rustls::ServerConfig>,
    /// The signed server certificate and its key (PKCS#8), PEM: for servers that read
    /// files (`redis-server --tls-cert-file`, PostgreSQL's `ssl_cert_file`).
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// Writes `ca.pem`, `server.pem` and `server.key` (mode 0600, as PostgreSQL wants it)
    /// into `dir`; returns their paths in that order.
    pub fn write_files(&self, dir: &std::path::Path) -> [std::path::PathBuf; 3] {
        use std::os::unix::fs::PermissionsExt;
        let paths = ["ca.pem", "server.pem", "server.key"].map(|n| dir.join(n));
        for (path, text) in paths
            .iter()
            .zip([&self.ca_pem, &self.cert_pem, &self.key_pem])
        {
            std::fs::write(path, text).expect("write a TLS file");
        }
        std::fs::set_permissions(&paths[2], std::fs::Permissions::from_mode(0o600))
            .expect("chmod the key");
        paths
    }

    /// A CA and a certificate for `names` (DNS names or IP addresses) signed by it.
    pub fn new(names: &[&str]) -> TestCa {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flashgate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("DNS name")),
            });
        }
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        TestCa {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT signing key and its public halves.
pub struct SigningKey {
    pub alg: jsonwebtoken::Algorithm,
    pub encoding: jsonwebtoken::EncodingKey,
    /// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_pem: String,
    /// The public key as a JWK (without `kid`; see [`SigningKey::jwk`]).
    jwk: serde_json::Value,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key for RS256.
    pub fn rsa() -> SigningKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
        let public = key.to_public_key();
        SigningKey {
            alg: jsonwebtoken::Algorithm::RS256,
            encoding: jsonwebtoken::EncodingKey::from_rsa_der(
                key.to_pkcs1_der().expect("PKCS#1").as_bytes(),
            ),
            public_pem: public.to_public_key_pem(LineEnding::LF).expect("PEM"),
            jwk: serde_json::json!({
                "kty": "RSA",
                "use": "sig",
                "n": b64url(&public.n().to_bytes_be()),
                "e": b64url(&public.e().to_bytes_be()),
            }),
        }
    }

    /// A fresh P-256 key for ES256.
    pub fn ec() -> SigningKey {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
        // Uncompressed point: 0x04 || x || y.
        let point = key.public_key_raw().to_vec();
        SigningKey {
            alg: jsonwebtoken::Algorithm::ES256,
            encoding: jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der()),
            public_pem: key.public_key_pem(),
            jwk: serde_json::json!({
                "kty": "EC",
                "use": "sig",
                "crv": "P-256",
                "x": b64url(&point[1..33]),
                "y": b64url(&point[33..65]),
            }),
        }
    }

    /// The public JWK with `kid`.
    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = kid.into();
        jwk
    }

    /// A token with `claims`, signed with this key and `alg`, naming `kid` when given.
    pub fn sign(&self, claims: &serde_json::Value, kid: Option<&str>) -> String {
        self.sign_as(self.alg, claims, kid)
    }

    pub fn sign_as(
        &self,
        alg: jsonwebtoken::Algorithm,
        claims: &serde_json::Value,
        kid: Option<&str>,
    ) -> String {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign JWT")
    }
}

/// A JWKS document of `keys` (`(kid, key)`).
pub fn jwks(keys: &[(&str, &SigningKey)]) -> String {
    let keys: Vec<_> = keys.iter().map(|(kid, k)| k.jwk(kid)).collect();
    serde_json::json!({ "keys": keys }).to_string()
}
