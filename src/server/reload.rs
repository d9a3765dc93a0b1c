//! Reloading the configuration while mqgate runs: on SIGHUP, and when the
//! configuration file or one of its policy files changes on disk (checked
//! every [`WATCH_EVERY`]). A file that fails validation changes nothing:
//! the previous configuration stays in force and the log says why.

use super::Server;
use crate::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the files are checked for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Runs until Ctrl-C or SIGTERM, reloading the configuration and its policy
/// files on SIGHUP and when one of them changes on disk.
pub async fn serve_until_stopped(server: &Server, path: &Path, config: &Config) {
    let mut watched = Watched::new(path, config);
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            _ = &mut stop => return,
            _ = hangup_received => "SIGHUP",
            _ = ticks.tick() => {
                if !watched.changed() {
                    continue;
                }
                "a configuration or policy file changed"
            }
        };
        match Config::load(path) {
            Ok(new_config) => {
                let next = Watched::new(path, &new_config);
                match server.reload(new_config).await {
                    Ok(report) => {
                        tracing::info!(
                            trigger = why,
                            started = ?report.started_instances,
                            removed = ?report.removed_instances,
                            "configuration reloaded"
                        );
                        if !report.needs_restart.is_empty() {
                            tracing::warn!(settings = ?report.needs_restart, "these settings changed but apply only after a restart");
                        }
                        watched = next;
                    }
                    Err(e) => {
                        tracing::error!(trigger = why, error = %e, "reload failed; the previous configuration stays in force");
                        watched.refresh();
                    }
                }
            }
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "reload refused; the previous configuration stays in force");
                watched.refresh();
            }
        }
    }
}

/// The configuration file and its policy files, with their last seen
/// modification times.
struct Watched {
    files: Vec<(PathBuf, Option<std::time::SystemTime>)>,
}

impl Watched {
    fn new(path: &Path, config: &Config) -> Watched {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut files = vec![path.to_path_buf()];
        files.extend(config.policy_files(base));
        let mut watched = Watched {
            files: files.into_iter().map(|f| (f, None)).collect(),
        };
        watched.refresh();
        watched
    }

    fn modified(path: &Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn refresh(&mut self) {
        for (path, seen) in &mut self.files {
            *seen = Watched::modified(path);
        }
    }

    fn changed(&self) -> bool {
        self.files
            .iter()
            .any(|(path, seen)| Watched::modified(path) != *seen)
    }
}

pub async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
