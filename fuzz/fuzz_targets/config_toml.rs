//! The configuration loader (src/config.rs, `Config::parse`): TOML syntax,
//! then validation and the attached policies, then the directory built
//! from it (src/directory.rs). Never panics.
//!
//! Policies attached by file name are read relative to the config file's
//! directory: it is a directory that does not exist, so that only the
//! shipped (system) policies load, and the fuzzer reads no files. (An
//! absolute path still would: inputs naming one under /dev, /proc or /sys,
//! or with a TOML \u escape that could spell one, are skipped, as reading
//! such a file could block or never end; the configuration is the
//! operator's own file.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqgate::config::Config;
use mqgate::directory::Directory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev", "/proc", "/sys", "\\u", "\\U"]
        .iter()
        .any(|p| text.contains(p))
    {
        return;
    }
    match Config::parse(text, "/nonexistent-mqgate-fuzz/mqgate.toml") {
        Ok(config) => {
            let directory = Directory::from_config(&config);
            let _ = config.policy_files(std::path::Path::new("/nonexistent-mqgate-fuzz"));
            let _ = directory;
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
