//! The RAM condition keys of a call: `acs:SourceIp`, `acs:SecureTransport`,
//! `acs:CurrentTime` and `acs:AccessId`, built the same way for the RPC
//! endpoint and the EMQX API.

use crate::directory::Directory;
use crate::ram::Context;
use chrono::{DateTime, Utc};
use std::net::IpAddr;

/// Where a request's RAM condition keys come from: a [`Context`] built
/// beforehand, or a [`LazyConditions`] that builds it on first use.
pub trait Conditions {
    fn context(&self) -> &Context;
}

impl Conditions for Context {
    fn context(&self) -> &Context {
        self
    }
}

/// The condition keys of a call, built only when a policy is evaluated: a
/// root key's calls evaluate none, and building them (a time and an address
/// formatted, a map filled) would be most of what authorizing them costs.
pub struct LazyConditions<'a> {
    access_key_id: &'a str,
    source_ip: Option<IpAddr>,
    now: DateTime<Utc>,
    built: std::sync::OnceLock<Context>,
}

impl<'a> LazyConditions<'a> {
    /// The time of the call (`acs:CurrentTime`).
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub fn new(
        access_key_id: &'a str,
        source_ip: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> LazyConditions<'a> {
        LazyConditions {
            access_key_id,
            source_ip,
            now,
            built: std::sync::OnceLock::new(),
        }
    }
}

impl Conditions for LazyConditions<'_> {
    fn context(&self) -> &Context {
        self.built
            .get_or_init(|| ram_context(self.access_key_id, self.source_ip, self.now))
    }
}

/// The RAM condition keys of a call by `access_key_id`. mqgate serves plain
/// HTTP, so `acs:SecureTransport` is false; an AccessKey call has no MFA,
/// so `acs:MFAPresent` is absent.
pub fn ram_context(access_key_id: &str, source_ip: Option<IpAddr>, now: DateTime<Utc>) -> Context {
    let mut context = Context::new();
    context
        .set("acs:SecureTransport", "false")
        .set(
            "acs:CurrentTime",
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
        .set("acs:AccessId", access_key_id);
    if let Some(ip) = source_ip {
        context.set("acs:SourceIp", ip.to_canonical().to_string());
    }
    context
}

/// The caller's address for `acs:SourceIp`: the TCP peer, unless the peer
/// is a trusted proxy, in which case the nearest untrusted address of
/// `X-Forwarded-For` (read from the right, as each proxy appends).
pub fn source_ip(directory: &Directory, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
    if !directory.is_trusted_proxy(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut hops = Vec::new();
    for hop in header.split(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => hops.push(ip),
            // A header we cannot read is not believed.
            Err(_) => return peer,
        }
    }
    hops.iter()
        .rev()
        .find(|ip| !directory.is_trusted_proxy(**ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}
