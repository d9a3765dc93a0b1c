//! Device authentication the ApsaraMQ for MQTT way, and which instance a
//! connecting client belongs to.
//!
//! - Signature mode: username `Signature|<AccessKeyId>|<InstanceId>`, password
//!   `Base64(HMAC-SHA1(key = AccessKeySecret, data = ClientId))`.
//! - DeviceCredential mode: username
//!   `DeviceCredential|<DeviceAccessKeyId>|<InstanceId>`, password
//!   `Base64(HMAC-SHA1(key = DeviceAccessKeySecret, data = ClientId))`, with
//!   the credential issued to that client id on that instance.
//! - Custom auth: any other username without `|` is a custom-auth
//!   identity's (AddCustomAuthIdentity); the password is the identity's
//!   secret (SignMode ORIGIN) or Base64(HMAC-SHA1(secret, ClientId))
//!   (SIGNED). Its username names no instance, so the instance is the one
//!   of the listener it came in on (`[[accounts.instances]] mqtt_listen`),
//!   else, on the shared port, the one instance holding that username: a
//!   username two instances hold is refused there, with a log line saying
//!   so (connect such devices to their instance's own listener). Alibaba
//!   tells instances apart by endpoint the same way. (TLS with SNI would be
//!   a third way; mqgate serves no TLS yet.)
//! - A client with no username lands in `mqtt.anonymous_instance` when that
//!   is set.
//!
//! On an instance's own listener, a Signature, Token or DeviceCredential
//! username must name that instance, and an anonymous client is let in
//! only if that instance is the anonymous one.
//!
//! A client id on the instance's connection blacklist is refused whatever
//! its login (3.1.1: 5 not authorized, 5: 0x8A banned).
//!
//! An instance with `require_group_ids` admits only client ids
//! `{GroupId}@@@{DeviceId}` whose group id was created on it.

use crate::devices::{DeviceStore, SignMode, group_of};
use crate::devices::{TokenGrant, TokenType};
use crate::directory::{Directory, Instance, User};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Why a CONNECT was refused: the return code for each protocol version and
/// a sentence for the MQTT 5 reason string and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// MQTT 3.1.1 CONNACK return code.
    pub v4_code: u8,
    /// MQTT 5 CONNACK reason code.
    pub v5_code: u8,
    pub reason: String,
}

impl Refusal {
    fn bad_credentials(reason: impl Into<String>) -> Refusal {
        Refusal {
            v4_code: 0x04,
            v5_code: 0x86,
            reason: reason.into(),
        }
    }

    fn not_authorized(reason: impl Into<String>) -> Refusal {
        Refusal {
            v4_code: 0x05,
            v5_code: 0x87,
            reason: reason.into(),
        }
    }
}

/// A client let in: its instance and what bounds the topics it may use.
#[derive(Debug)]
pub struct Admitted {
    pub instance: Arc<Instance>,
    pub bound_by: Bounds,
}

/// What bounds an admitted client's topics.
#[derive(Debug)]
pub enum Bounds {
    /// Nothing: the instance's topics are open to it (Signature,
    /// DeviceCredential, anonymous).
    Open,
    /// Token mode: these tokens.
    Tokens(Vec<Arc<TokenGrant>>),
    /// Custom auth: the permission rules of this username (and of the
    /// client id).
    CustomAuth { username: String },
}

impl From<Arc<Instance>> for Admitted {
    fn from(instance: Arc<Instance>) -> Admitted {
        Admitted {
            instance,
            bound_by: Bounds::Open,
        }
    }
}

/// The username prefixes of Alibaba's device login modes: a username with
/// one of them is always read as that mode.
const MODE_PREFIXES: [&str; 3] = ["Signature|", "Token|", "DeviceCredential|"];

/// The instance a client may connect to, given the listener it came in on
/// (`endpoint`: the instance of an instance's own listener, `None` on the
/// shared port), its client id and the username and password of its
/// CONNECT.
pub fn authenticate(
    directory: &Directory,
    devices: &DeviceStore,
    endpoint: Option<&str>,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Admitted, Refusal> {
    let admitted = login(directory, devices, endpoint, client_id, username, password)?;
    if let Some(endpoint) = endpoint
        && admitted.instance.id != endpoint
    {
        return Err(Refusal::not_authorized(format!(
            "this MQTT listener serves instance {endpoint}; the login names instance {}",
            admitted.instance.id
        )));
    }
    check_group(&admitted.instance, devices, client_id)?;
    if devices.is_blacklisted(&admitted.instance.id, client_id) {
        return Err(Refusal {
            v4_code: 0x05,
            v5_code: 0x8A,
            reason: format!(
                "client id {client_id} is on the connection blacklist of instance {} (DeleteCustomAuthConnectBlack)",
                admitted.instance.id
            ),
        });
    }
    Ok(admitted)
}

/// With `require_group_ids`, the client id's group id must exist on the
/// instance.
fn check_group(instance: &Instance, devices: &DeviceStore, client_id: &str) -> Result<(), Refusal> {
    if !instance.require_group_ids {
        return Ok(());
    }
    match group_of(client_id) {
        Some(group) if devices.has_group(&instance.id, group) => Ok(()),
        Some(group) => Err(Refusal::not_authorized(format!(
            "group id {group} has not been created on instance {} (CreateGroupId)",
            instance.id
        ))),
        None => Err(Refusal::not_authorized(format!(
            "instance {} requires client ids GroupId@@@DeviceId with a created group id",
            instance.id
        ))),
    }
}

/// The instance a login (username and password) names, once its
/// credentials are checked.
fn login(
    directory: &Directory,
    devices: &DeviceStore,
    endpoint: Option<&str>,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Admitted, Refusal> {
    let username = username.filter(|u| !u.is_empty());
    let Some(username) = username else {
        let anonymous = match endpoint {
            Some(endpoint) => directory.anonymous_instance().filter(|i| i.id == endpoint),
            None => directory.anonymous_instance(),
        };
        return anonymous.cloned().map(Admitted::from).ok_or_else(|| {
            Refusal::not_authorized(
                "anonymous clients are not accepted: connect with username \
                 Signature|AccessKeyId|InstanceId and password Base64(HMAC-SHA1(AccessKeySecret, ClientId))",
            )
        });
    };
    if !username.contains('|') && !MODE_PREFIXES.iter().any(|p| username.starts_with(p)) {
        return custom_login(
            directory,
            devices,
            endpoint,
            client_id,
            username,
            password.unwrap_or(""),
        );
    }
    let mut parts = username.split('|');
    let (Some(mode), Some(key_id), Some(instance_id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::bad_credentials(
            "username must be Signature|AccessKeyId|InstanceId or DeviceCredential|DeviceAccessKeyId|InstanceId",
        ));
    };
    let password = password.unwrap_or("");
    match mode {
        "Signature" => {
            signature_login(directory, client_id, key_id, instance_id, password).map(Admitted::from)
        }
        "DeviceCredential" => {
            credential_login(directory, devices, client_id, key_id, instance_id, password)
                .map(Admitted::from)
        }
        "Token" => token_login(directory, devices, key_id, instance_id, password),
        other => Err(Refusal::bad_credentials(format!(
            "authentication mode \"{other}\" is not supported; use Signature, Token or DeviceCredential"
        ))),
    }
}

/// Token mode: the password names one token per type (`R|t`, `W|t`,
/// `RW|t`, or several: `R|t1|W|t2`), each applied for on this instance by
/// the account of the AccessKeyId in the username, and valid now. One bad
/// part refuses the whole login (Alibaba: "if some tokens are invalid, the
/// broker may determine that the token settings are invalid").
fn token_login(
    directory: &Directory,
    devices: &DeviceStore,
    access_key_id: &str,
    instance_id: &str,
    password: &str,
) -> Result<Admitted, Refusal> {
    let (user, instance) = key_and_instance(directory, access_key_id, instance_id)?;
    let parts: Vec<&str> = password.split('|').collect();
    if password.is_empty() || !parts.len().is_multiple_of(2) {
        return Err(Refusal::bad_credentials(
            "password must be R|token, W|token, RW|token or several of them joined with |",
        ));
    }
    let now = crate::broker::tokens::now_ms();
    let mut grants: Vec<Arc<TokenGrant>> = Vec::new();
    for pair in parts.chunks(2) {
        let (label, token) = (pair[0], pair[1]);
        let Some(kind) = TokenType::from_label(label) else {
            return Err(Refusal::bad_credentials(format!(
                "token type \"{label}\" is not R, W or RW"
            )));
        };
        if grants.iter().any(|g| g.kind == kind) {
            return Err(Refusal::bad_credentials(format!(
                "the password names two tokens of type {label}; a client holds one per type"
            )));
        }
        let grant = devices
            .token(token)
            .filter(|g| g.instance_id == instance.id && g.account_id == user.account_id);
        let Some(grant) = grant else {
            return Err(Refusal::bad_credentials(format!(
                "the {label} token was not issued for instance {instance_id} to this AccessKeyId's account, or it was revoked"
            )));
        };
        if grant.kind != kind {
            return Err(Refusal::bad_credentials(format!(
                "the {label} token was applied for with Actions {}; present it as {}|token",
                match grant.kind {
                    TokenType::RW => "R,W",
                    other => other.label(),
                },
                grant.kind.label()
            )));
        }
        if !grant.valid_at(now) {
            return Err(Refusal::bad_credentials(format!(
                "the {label} token has expired or was revoked"
            )));
        }
        grants.push(grant);
    }
    Ok(Admitted {
        instance: instance.clone(),
        bound_by: Bounds::Tokens(grants),
    })
}

/// Custom auth: the identity of this username (and client id) on the
/// listener's instance, or on the one instance that holds the username.
fn custom_login(
    directory: &Directory,
    devices: &DeviceStore,
    endpoint: Option<&str>,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<Admitted, Refusal> {
    let instance_id = match endpoint {
        Some(endpoint) => endpoint.to_string(),
        None => {
            let holders = devices.custom_username_instances(username);
            match holders.as_slice() {
                [] => {
                    return Err(Refusal::bad_credentials(format!(
                        "username \"{username}\" is no custom-auth identity (AddCustomAuthIdentity) of any instance; \
                         other logins use Signature|, Token| or DeviceCredential| usernames"
                    )));
                }
                [one] => one.clone(),
                several => {
                    tracing::warn!(
                        username,
                        instances = ?several,
                        "custom-auth login refused on the shared MQTT port: several instances hold this username; give them their own mqtt_listen"
                    );
                    return Err(Refusal::not_authorized(format!(
                        "username \"{username}\" belongs to several instances; connect to your instance's own MQTT listener"
                    )));
                }
            }
        }
    };
    let Some(instance) = directory.instance(&instance_id) else {
        return Err(Refusal::not_authorized(format!(
            "instance \"{instance_id}\" is not served here"
        )));
    };
    let Some(identity) = devices.custom_login(&instance_id, username, client_id) else {
        return Err(Refusal::bad_credentials(format!(
            "instance {instance_id} has no custom-auth identity \"{username}\" for this client id"
        )));
    };
    let secret = identity.secret.expose();
    let accepted = match identity.sign_mode {
        SignMode::Origin => bool::from(password.as_bytes().ct_eq(secret.as_bytes())),
        SignMode::Signed => verify_password(secret, client_id, password),
    };
    if !accepted {
        return Err(Refusal::bad_credentials(match identity.sign_mode {
            SignMode::Origin => "wrong password: SignMode ORIGIN expects the identity's secret",
            SignMode::Signed => {
                "wrong password: SignMode SIGNED expects Base64(HMAC-SHA1(secret, ClientId))"
            }
        }));
    }
    Ok(Admitted {
        instance: instance.clone(),
        bound_by: Bounds::CustomAuth {
            username: username.to_string(),
        },
    })
}

/// Signature mode: an AccessKey of the instance's account signs the client
/// id.
fn signature_login(
    directory: &Directory,
    client_id: &str,
    access_key_id: &str,
    instance_id: &str,
    password: &str,
) -> Result<Arc<Instance>, Refusal> {
    let (user, instance) = key_and_instance(directory, access_key_id, instance_id)?;
    if !verify_password(user.access_key_secret.expose(), client_id, password) {
        return Err(Refusal::bad_credentials(
            "password must be Base64(HMAC-SHA1(AccessKeySecret, ClientId))",
        ));
    }
    Ok(instance.clone())
}

/// The active key of a username (Signature and Token modes) and the
/// instance it names, which must be of the key's account.
fn key_and_instance<'d>(
    directory: &'d Directory,
    access_key_id: &str,
    instance_id: &str,
) -> Result<(&'d Arc<User>, &'d Arc<Instance>), Refusal> {
    let Some(user) = directory.user(access_key_id) else {
        return Err(Refusal::bad_credentials(format!(
            "AccessKeyId \"{access_key_id}\" is not known"
        )));
    };
    if user.disabled {
        return Err(Refusal::bad_credentials(format!(
            "AccessKeyId \"{access_key_id}\" is disabled"
        )));
    }
    let Some(instance) = directory
        .instance(instance_id)
        .filter(|i| i.account_id == user.account_id)
    else {
        return Err(Refusal::bad_credentials(format!(
            "instance \"{instance_id}\" does not exist in the account of AccessKeyId \"{access_key_id}\""
        )));
    };
    Ok((user, instance))
}

/// DeviceCredential mode: the credential issued to this client id on this
/// instance (RegisterDeviceCredential) signs the client id.
fn credential_login(
    directory: &Directory,
    devices: &DeviceStore,
    client_id: &str,
    device_key_id: &str,
    instance_id: &str,
    password: &str,
) -> Result<Arc<Instance>, Refusal> {
    let credential = devices
        .credential_by_key(device_key_id)
        .filter(|c| c.instance_id == instance_id);
    let Some(credential) = credential else {
        return Err(Refusal::bad_credentials(format!(
            "DeviceAccessKeyId \"{device_key_id}\" is not a device credential of instance \"{instance_id}\""
        )));
    };
    if credential.client_id != client_id {
        return Err(Refusal::bad_credentials(format!(
            "DeviceAccessKeyId \"{device_key_id}\" was issued to another client id"
        )));
    }
    let Some(instance) = directory.instance(instance_id) else {
        return Err(Refusal::bad_credentials(format!(
            "instance \"{instance_id}\" does not exist"
        )));
    };
    let secret = devices.credential_secret(&credential);
    if !verify_password(secret.expose(), client_id, password) {
        return Err(Refusal::bad_credentials(
            "password must be Base64(HMAC-SHA1(DeviceAccessKeySecret, ClientId))",
        ));
    }
    Ok(instance.clone())
}

/// The Signature-mode password of `client_id` under `secret`.
pub fn signature_password(secret: &str, client_id: &str) -> String {
    BASE64.encode(password_mac(secret, client_id).finalize().into_bytes())
}

fn password_mac(secret: &str, client_id: &str) -> Hmac<Sha1> {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(client_id.as_bytes());
    mac
}

/// Constant-time check of a Signature-mode password.
fn verify_password(secret: &str, client_id: &str, password: &str) -> bool {
    let Ok(provided) = BASE64.decode(password.trim().as_bytes()) else {
        return false;
    };
    password_mac(secret, client_id)
        .verify_slice(&provided)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn directory(anonymous: bool) -> Directory {
        let mut text = String::from(
            r#"
            [[accounts]]
            id = "1"
              [[accounts.instances]]
              id = "inst-a"
              [[accounts.users]]
              name = "root"
              access_key_id = "ka"
              access_key_secret = "sec-a-7f3"
              root = true
              [[accounts.users]]
              name = "off"
              access_key_id = "koff"
              access_key_secret = "soff"
              disabled = true
            [[accounts]]
            id = "2"
              [[accounts.instances]]
              id = "inst-b"
              [[accounts.users]]
              name = "root"
              access_key_id = "kb"
              access_key_secret = "sb"
              root = true
            "#,
        );
        if anonymous {
            text = format!("[mqtt]\nanonymous_instance = \"inst-a\"\n{text}");
        }
        Directory::from_config(&Config::parse(&text, "t.toml").unwrap())
    }

    /// An empty device store in a directory of its own.
    fn store() -> (tempfile::TempDir, DeviceStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::open(dir.path(), None).unwrap();
        (dir, store)
    }

    #[test]
    fn a_correct_signature_lands_in_the_named_instance() {
        let d = directory(false);
        let (_dir, devices) = store();
        let password = signature_password("sec-a-7f3", "GID_x@@@dev1");
        let instance = authenticate(
            &d,
            &devices,
            None,
            "GID_x@@@dev1",
            Some("Signature|ka|inst-a"),
            Some(&password),
        )
        .unwrap();
        assert_eq!(instance.instance.id, "inst-a");
    }

    #[test]
    fn every_wrong_credential_is_refused_with_bad_username_or_password() {
        let d = directory(false);
        let (_dir, devices) = store();
        let good = signature_password("sec-a-7f3", "c1");
        let cases = [
            (
                "c1",
                "Signature|ka|inst-a",
                signature_password("sec-a-7f3", "other-client"),
            ),
            (
                "c1",
                "Signature|ka|inst-a",
                signature_password("wrong", "c1"),
            ),
            ("c1", "Signature|ka|inst-a", "not base64!".to_string()),
            ("c1", "Signature|unknown|inst-a", good.clone()),
            (
                "c1",
                "Signature|koff|inst-a",
                signature_password("soff", "c1"),
            ),
            ("c1", "Signature|ka|inst-b", good.clone()),
            ("c1", "Signature|ka|nope", good.clone()),
            ("c1", "Token|ka|inst-a", good.clone()),
            ("c1", "Signature|ka", good.clone()),
            ("c1", "Signature|ka|inst-a|x", good.clone()),
        ];
        for (client_id, username, password) in cases {
            let refusal = authenticate(
                &d,
                &devices,
                None,
                client_id,
                Some(username),
                Some(&password),
            )
            .unwrap_err();
            assert_eq!(
                (refusal.v4_code, refusal.v5_code),
                (0x04, 0x86),
                "{username} / {password}"
            );
            assert!(
                !refusal.reason.contains("sec-a-7f3"),
                "secret leaked: {}",
                refusal.reason
            );
        }
    }

    #[test]
    fn anonymous_clients_land_only_where_configured() {
        let (_dir, devices) = store();
        let refusal = authenticate(&directory(false), &devices, None, "c", None, None).unwrap_err();
        assert_eq!((refusal.v4_code, refusal.v5_code), (0x05, 0x87));
        let instance = authenticate(&directory(true), &devices, None, "c", Some(""), None).unwrap();
        assert_eq!(instance.instance.id, "inst-a");
    }

    #[tokio::test]
    async fn an_instance_that_requires_group_ids_admits_only_created_ones() {
        let text = r#"
            [mqtt]
            anonymous_instance = "strict"
            [[accounts]]
            id = "1"
              [[accounts.instances]]
              id = "strict"
              require_group_ids = true
              [[accounts.users]]
              name = "root"
              access_key_id = "ka"
              access_key_secret = "sa"
              root = true
        "#;
        let d = Directory::from_config(&Config::parse(text, "t.toml").unwrap());
        let (_dir, devices) = store();
        devices
            .create_group("strict", "GID_ok", 1, 10)
            .await
            .unwrap();
        devices
            .create_group("elsewhere", "GID_other", 1, 10)
            .await
            .unwrap();
        let login = |client_id: &str| {
            let password = signature_password("sa", client_id);
            authenticate(
                &d,
                &devices,
                None,
                client_id,
                Some("Signature|ka|strict"),
                Some(&password),
            )
        };
        assert_eq!(login("GID_ok@@@dev-1").unwrap().instance.id, "strict");
        for refused in [
            "GID_other@@@dev-1",
            "GID_none@@@dev-1",
            "no-group-at-all",
            "",
        ] {
            let refusal = login(refused).unwrap_err();
            assert_eq!(
                (refusal.v4_code, refusal.v5_code),
                (0x05, 0x87),
                "{refused}"
            );
            assert!(refusal.reason.contains("strict"), "{}", refusal.reason);
        }
        // Anonymous clients too.
        assert!(authenticate(&d, &devices, None, "GID_ok@@@x", None, None).is_ok());
        assert!(authenticate(&d, &devices, None, "GID_no@@@x", None, None).is_err());
    }

    #[tokio::test]
    async fn a_device_credential_logs_in_its_own_client_id_only() {
        let d = directory(false);
        let (_dir, devices) = store();
        let crate::devices::Registered::New(credential) = devices
            .register_credential("inst-a", "GID_x@@@dev1", 1, 10)
            .await
            .unwrap()
        else {
            panic!("not registered")
        };
        let username = format!("DeviceCredential|{}|inst-a", credential.access_key_id);
        let secret = devices.credential_secret(&credential);
        let password = |client_id: &str| signature_password(secret.expose(), client_id);
        let login = |client_id: &str, username: &str, password: &str| {
            authenticate(
                &d,
                &devices,
                None,
                client_id,
                Some(username),
                Some(password),
            )
        };
        assert_eq!(
            login("GID_x@@@dev1", &username, &password("GID_x@@@dev1"))
                .unwrap()
                .instance
                .id,
            "inst-a"
        );
        let elsewhere = format!("DeviceCredential|{}|inst-b", credential.access_key_id);
        let refused = [
            // Another client id, even signed with the right secret.
            login("GID_x@@@dev2", &username, &password("GID_x@@@dev2")),
            // Another instance.
            login("GID_x@@@dev1", &elsewhere, &password("GID_x@@@dev1")),
            // A wrong secret, an unknown key.
            login(
                "GID_x@@@dev1",
                &username,
                &signature_password("DC.wrong", "GID_x@@@dev1"),
            ),
            login(
                "GID_x@@@dev1",
                "DeviceCredential|DC.nope|inst-a",
                &password("GID_x@@@dev1"),
            ),
        ];
        for refusal in refused {
            let refusal = refusal.unwrap_err();
            assert_eq!((refusal.v4_code, refusal.v5_code), (0x04, 0x86));
            assert!(
                !refusal.reason.contains(&secret.expose()[3..]),
                "{}",
                refusal.reason
            );
        }
        // After a refresh the old secret is refused, the new one accepted.
        let refreshed = devices
            .refresh_credential("inst-a", "GID_x@@@dev1", 2)
            .await
            .unwrap()
            .unwrap();
        assert!(login("GID_x@@@dev1", &username, &password("GID_x@@@dev1")).is_err());
        let new_password = signature_password(
            devices.credential_secret(&refreshed).expose(),
            "GID_x@@@dev1",
        );
        assert!(login("GID_x@@@dev1", &username, &new_password).is_ok());
        // Unregistered: refused.
        devices
            .unregister_credential("inst-a", "GID_x@@@dev1")
            .await
            .unwrap();
        assert!(login("GID_x@@@dev1", &username, &new_password).is_err());
    }
    async fn add_identity(
        devices: &DeviceStore,
        instance: &str,
        kind: crate::devices::IdentityType,
        username: &str,
        client_id: &str,
        sign_mode: SignMode,
        secret: &str,
    ) {
        let outcome = devices
            .add_custom_identity(
                instance,
                crate::devices::Identity {
                    kind,
                    username: username.into(),
                    client_id: client_id.into(),
                    sign_mode,
                    secret: crate::secret::Secret::new(secret),
                },
                1,
                100,
            )
            .await
            .unwrap();
        assert_eq!(outcome, crate::devices::Added::Added);
    }

    #[tokio::test]
    async fn custom_auth_logins_check_the_sign_mode_and_find_their_instance() {
        use crate::devices::IdentityType::{Client, User};
        let d = directory(false);
        let (_dir, devices) = store();
        add_identity(
            &devices,
            "inst-a",
            User,
            "origin-user",
            "",
            SignMode::Origin,
            "pw-1",
        )
        .await;
        add_identity(
            &devices,
            "inst-a",
            User,
            "signed-user",
            "",
            SignMode::Signed,
            "pw-2",
        )
        .await;
        add_identity(
            &devices,
            "inst-b",
            Client,
            "bound",
            "GID_b@@@1",
            SignMode::Origin,
            "pw-3",
        )
        .await;
        let login = |endpoint: Option<&str>, client_id: &str, username: &str, password: &str| {
            authenticate(
                &d,
                &devices,
                endpoint,
                client_id,
                Some(username),
                Some(password),
            )
        };
        let admitted = login(None, "any", "origin-user", "pw-1").unwrap();
        assert_eq!(admitted.instance.id, "inst-a");
        assert!(
            matches!(admitted.bound_by, Bounds::CustomAuth { ref username } if username == "origin-user")
        );
        let signed = signature_password("pw-2", "GID_s@@@1");
        assert_eq!(
            login(None, "GID_s@@@1", "signed-user", &signed)
                .unwrap()
                .instance
                .id,
            "inst-a"
        );
        assert_eq!(
            login(None, "GID_b@@@1", "bound", "pw-3")
                .unwrap()
                .instance
                .id,
            "inst-b"
        );
        for (client_id, username, password) in [
            ("any", "origin-user", "pw-2"),
            // SIGNED wants the signature, not the secret itself.
            ("GID_s@@@1", "signed-user", "pw-2"),
            // Signed for another client id.
            ("GID_s@@@2", "signed-user", signed.as_str()),
            // A CLIENT identity logs in its own client id only.
            ("GID_b@@@2", "bound", "pw-3"),
            ("any", "nobody", "pw-1"),
        ] {
            let refusal = login(None, client_id, username, password).unwrap_err();
            assert_eq!(
                (refusal.v4_code, refusal.v5_code),
                (0x04, 0x86),
                "{username}: {}",
                refusal.reason
            );
            assert!(
                !refusal.reason.contains("pw-"),
                "secret leaked: {}",
                refusal.reason
            );
        }
        // On an instance's own listener, only that instance's identities.
        assert!(login(Some("inst-a"), "any", "origin-user", "pw-1").is_ok());
        assert!(login(Some("inst-b"), "any", "origin-user", "pw-1").is_err());
        // And a Signature login there must name that instance.
        let password = signature_password("sec-a-7f3", "c1");
        assert!(login(Some("inst-a"), "c1", "Signature|ka|inst-a", &password).is_ok());
        let refusal = login(Some("inst-b"), "c1", "Signature|ka|inst-a", &password).unwrap_err();
        assert_eq!((refusal.v4_code, refusal.v5_code), (0x05, 0x87));
    }

    #[tokio::test]
    async fn a_username_two_instances_hold_is_refused_on_the_shared_port_only() {
        use crate::devices::IdentityType::User;
        let d = directory(false);
        let (_dir, devices) = store();
        add_identity(
            &devices,
            "inst-a",
            User,
            "shared",
            "",
            SignMode::Origin,
            "pw-a",
        )
        .await;
        add_identity(
            &devices,
            "inst-b",
            User,
            "shared",
            "",
            SignMode::Origin,
            "pw-b",
        )
        .await;
        let refusal =
            authenticate(&d, &devices, None, "c", Some("shared"), Some("pw-a")).unwrap_err();
        assert_eq!((refusal.v4_code, refusal.v5_code), (0x05, 0x87));
        assert!(
            refusal.reason.contains("several instances"),
            "{}",
            refusal.reason
        );
        for (endpoint, password) in [("inst-a", "pw-a"), ("inst-b", "pw-b")] {
            let admitted = authenticate(
                &d,
                &devices,
                Some(endpoint),
                "c",
                Some("shared"),
                Some(password),
            )
            .unwrap();
            assert_eq!(admitted.instance.id, endpoint);
        }
        // Another mode's prefix is that mode, even if an identity could
        // not be named so ('|' is not allowed in custom-auth usernames).
        let refusal =
            authenticate(&d, &devices, None, "c", Some("Token|ka|inst-a"), Some("x")).unwrap_err();
        assert!(refusal.reason.contains("token"), "{}", refusal.reason);
    }
}
