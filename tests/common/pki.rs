//! A local certificate authority for the tests that need a certificate chain a client
//! can verify (the TLS scan): a CA and a leaf it signed, both P-256.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509NameBuilder, X509};

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("key")
}

fn name(cn: &str) -> X509Name {
    let mut b = X509NameBuilder::new().expect("name");
    b.append_entry_by_nid(Nid::COMMONNAME, cn).expect("CN");
    b.build()
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = BigNum::new().expect("bn");
    bn.rand(127, MsbOption::MAYBE_ZERO, false).expect("rand");
    bn.to_asn1_integer().expect("serial")
}

/// (CA certificate PEM, leaf chain PEM (leaf then CA), leaf key PEM) for `names`, the
/// leaf valid for 90 days.
pub fn ca_and_leaf(names: &[&str]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ca_key = key();
    let mut ca = X509::builder().expect("builder");
    ca.set_version(2).expect("v3");
    ca.set_serial_number(&serial()).expect("serial");
    ca.set_subject_name(&name("gateway test CA"))
        .expect("subject");
    ca.set_issuer_name(&name("gateway test CA"))
        .expect("issuer");
    ca.set_pubkey(&ca_key).expect("pubkey");
    ca.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("nb");
    ca.set_not_after(&Asn1Time::days_from_now(365).expect("time"))
        .expect("na");
    ca.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
        .expect("bc");
    ca.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .expect("ku"),
    )
    .expect("ku");
    let ski = SubjectKeyIdentifier::new()
        .build(&ca.x509v3_context(None, None))
        .expect("ski");
    ca.append_extension(ski).expect("ski");
    ca.sign(&ca_key, MessageDigest::sha256()).expect("sign CA");
    let ca = ca.build();

    let leaf_key = key();
    let mut leaf = X509::builder().expect("builder");
    leaf.set_version(2).expect("v3");
    leaf.set_serial_number(&serial()).expect("serial");
    leaf.set_subject_name(&name(names[0])).expect("subject");
    leaf.set_issuer_name(ca.subject_name()).expect("issuer");
    leaf.set_pubkey(&leaf_key).expect("pubkey");
    leaf.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("nb");
    leaf.set_not_after(&Asn1Time::days_from_now(90).expect("time"))
        .expect("na");
    leaf.append_extension(BasicConstraints::new().build().expect("bc"))
        .expect("bc");
    leaf.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .expect("ku"),
    )
    .expect("ku");
    leaf.append_extension(ExtendedKeyUsage::new().server_auth().build().expect("eku"))
        .expect("eku");
    let mut san = SubjectAlternativeName::new();
    for n in names {
        san.dns(n);
    }
    let san = san
        .build(&leaf.x509v3_context(Some(&ca), None))
        .expect("san");
    leaf.append_extension(san).expect("san");
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&leaf.x509v3_context(Some(&ca), None))
        .expect("aki");
    leaf.append_extension(aki).expect("aki");
    leaf.sign(&ca_key, MessageDigest::sha256())
        .expect("sign leaf");
    let leaf = leaf.build();

    let ca_pem = ca.to_pem().expect("pem");
    let mut chain = leaf.to_pem().expect("pem");
    chain.extend_from_slice(&ca_pem);
    let key_pem = leaf_key.private_key_to_pem_pkcs8().expect("key pem");
    (ca_pem, chain, key_pem)
}
