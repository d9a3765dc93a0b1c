//! The few MQTT 3.1.1 packets the device-edge subcommands (`idle`,
//! `connect`) send, encoded by hand: these clients hold thousands of
//! connections or open thousands a second, and a full client per
//! connection (rumqttc's event loop, its buffers and queues) would cost the
//! load generator more than it costs the server being measured.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a device logs in.
#[derive(Clone)]
pub enum Login {
    /// No username: the server's anonymous instance.
    Anonymous,
    /// The same username and password for every device.
    Fixed(String, String),
    /// ApsaraMQ Signature mode: `Signature|KEYID|INSTANCE`, the client id
    /// signed with SECRET.
    Signature {
        key_id: String,
        secret: String,
        instance: String,
    },
}

impl Login {
    /// From the subcommands' `--username`/`--password` or
    /// `--signature KEYID:SECRET:INSTANCE`.
    pub fn from_args(
        username: Option<&str>,
        password: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Login, String> {
        if let Some(spec) = signature {
            let mut parts = spec.splitn(3, ':');
            return match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(s), Some(i)) => Ok(Login::Signature {
                    key_id: k.into(),
                    secret: s.into(),
                    instance: i.into(),
                }),
                _ => Err("--signature must be KEYID:SECRET:INSTANCE".into()),
            };
        }
        match (username, password) {
            (Some(u), Some(p)) => Ok(Login::Fixed(u.into(), p.into())),
            (None, None) => Ok(Login::Anonymous),
            _ => Err("--username and --password go together".into()),
        }
    }

    fn credentials(&self, client_id: &str) -> Option<(String, String)> {
        match self {
            Login::Anonymous => None,
            Login::Fixed(u, p) => Some((u.clone(), p.clone())),
            Login::Signature {
                key_id,
                secret,
                instance,
            } => Some((
                format!("Signature|{key_id}|{instance}"),
                mqgate::broker::device_auth::signature_password(secret, client_id),
            )),
        }
    }
}

/// An MQTT 3.1.1 CONNECT, clean session, with `keep_alive` seconds.
pub fn connect_packet(client_id: &str, login: &Login, keep_alive: u16) -> Vec<u8> {
    let credentials = login.credentials(client_id);
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04]);
    // Clean session; username and password flags when logging in.
    let flags = 0x02 | if credentials.is_some() { 0xC0 } else { 0 };
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    let mut string = |s: &str| {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    };
    string(client_id);
    if let Some((username, password)) = &credentials {
        string(username);
        string(password);
    }
    let mut packet = vec![0x10];
    packet.extend(remaining_length(body.len()));
    packet.extend(body);
    packet
}

pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// Opens a TCP connection, sends CONNECT and reads an accepting CONNACK,
/// all within `timeout`; the connection, or why not.
pub async fn connect_device(
    addr: SocketAddr,
    connect: &[u8],
    timeout: Duration,
) -> Result<TcpStream, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(connect)
            .await
            .map_err(|e| format!("writing CONNECT: {e}"))?;
        let mut ack = [0u8; 4];
        stream
            .read_exact(&mut ack)
            .await
            .map_err(|e| format!("reading CONNACK: {e}"))?;
        if ack[0] != 0x20 || ack[1] != 0x02 {
            return Err(format!("not a CONNACK: {ack:02x?}"));
        }
        if ack[3] != 0 {
            let why = match ack[3] {
                1 => "unacceptable protocol version",
                2 => "identifier rejected",
                3 => "server unavailable",
                4 => "bad user name or password",
                5 => "not authorized",
                _ => "unknown return code",
            };
            return Err(format!("CONNACK refused, return code {} ({why})", ack[3]));
        }
        Ok(stream)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no CONNACK within {} s", timeout.as_secs_f64()))?
}

/// Says goodbye as a well-behaved device does: DISCONNECT, then waits (up
/// to `timeout`) for the server to close. Closing right behind the
/// DISCONNECT instead makes rumqttd 0.20 report the connection gone twice,
/// the second time possibly ending a new connection that was given the
/// same connection id.
pub async fn disconnect(mut stream: TcpStream, timeout: Duration) -> Result<(), String> {
    stream
        .write_all(&DISCONNECT)
        .await
        .map_err(|e| format!("writing DISCONNECT: {e}"))?;
    let mut sink = [0u8; 64];
    let closed = tokio::time::timeout(timeout, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.map_err(|_| {
        format!(
            "not closed within {} s of DISCONNECT",
            timeout.as_secs_f64()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_is_well_formed() {
        let anonymous = connect_packet("dev-1", &Login::Anonymous, 60);
        assert_eq!(
            anonymous,
            [
                0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 5, b'd', b'e', b'v',
                b'-', b'1'
            ]
        );
        let fixed = connect_packet("c", &Login::Fixed("u".into(), "pw".into()), 10);
        assert_eq!(fixed[9], 0xC2);
        assert_eq!(&fixed[fixed.len() - 7..], &[0, 1, b'u', 0, 2, b'p', b'w']);
        assert_eq!(usize::from(fixed[1]), fixed.len() - 2);
        assert_eq!(remaining_length(321), vec![0xC1, 0x02]);
    }
}
