//! `mqgate policy simulate` and `mqgate policy validate`: answers a policy
//! writer's question in one command, with the same code the gateway runs.

use crate::ram::{Context, Policy, evaluate, load_policy};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Check and try RAM policies without a running gateway.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Decide one request: prints Allow, ImplicitDeny or ExplicitDeny, then
    /// which statement of which policy decided. Exit 0 whatever the decision.
    Simulate {
        /// A policy file, or a system policy name (AliyunMQReadOnlyAccess, ...). Repeatable.
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<String>,
        /// The RAM action, e.g. mq:CloseConnection.
        #[arg(long)]
        action: String,
        /// The resource ARN, e.g. acs:mq:cn-hangzhou:1234567890:post-cn-demo.
        #[arg(long)]
        resource: String,
        /// A condition key and its value, e.g. acs:SourceIp=192.0.2.10. Repeatable.
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check policy files as the gateway does when it loads them.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
}

/// Runs a policy command: prints its outcome, returns its exit code.
pub fn run(command: Command) -> ExitCode {
    let outcome = match &command {
        Command::Simulate {
            policies,
            action,
            resource,
            context,
            json,
        } => simulate(policies, action, resource, context, *json),
        Command::Validate { files } => validate(files),
    };
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    ExitCode::from(outcome.code)
}

/// What a command prints and its exit code.
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

fn bad_input(message: String) -> Outcome {
    Outcome {
        stdout: String::new(),
        stderr: message,
        code: 2,
    }
}

/// Loads policies named on the command line: file paths, or the names of
/// the system policies. Each is named in explanations as given.
fn load_all(references: &[String]) -> Result<Vec<Arc<Policy>>, String> {
    references
        .iter()
        .map(|reference| {
            let mut policy = load_policy(reference, Path::new("."))?;
            policy.name = reference.clone();
            Ok(Arc::new(policy))
        })
        .collect()
}

/// Evaluates `action` on `resource` under the policies and context.
/// The first line is the decision (Allow, ImplicitDeny or ExplicitDeny);
/// exit 0 whatever it is, 2 for bad input.
pub fn simulate(
    policies: &[String],
    action: &str,
    resource: &str,
    context_pairs: &[String],
    json: bool,
) -> Outcome {
    let policies = match load_all(policies) {
        Ok(policies) => policies,
        Err(e) => return bad_input(e),
    };
    let mut context = Context::new();
    for pair in context_pairs {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                context.set(key, value);
            }
            _ => {
                return bad_input(format!(
                    "--context \"{pair}\" is not KEY=VALUE (e.g. acs:SourceIp=192.0.2.10)"
                ));
            }
        }
    }
    let decision = evaluate(&policies, action, resource, &context);
    let stdout = if json {
        serde_json::json!({
            "Decision": decision.kind.as_str(),
            "Policy": decision.policy.map(|p| p.name.as_str()),
            "Statement": decision.statement,
            "Explanation": decision.explain(),
        })
        .to_string()
            + "\n"
    } else {
        format!("{}\n{}\n", decision.kind.as_str(), decision.explain())
    };
    Outcome {
        stdout,
        stderr: String::new(),
        code: 0,
    }
}

/// Checks policy files; one line per file. Exit 1 if any is invalid.
pub fn validate(files: &[String]) -> Outcome {
    let mut stdout = String::new();
    let mut stderr = String::new();
    for file in files {
        match load_policy(file, Path::new(".")) {
            Ok(policy) => stdout.push_str(&format!(
                "{file}: valid, {} statement(s)\n",
                policy.statements.len()
            )),
            Err(e) => stderr.push_str(&format!("{e}\n")),
        }
    }
    let code = if stderr.is_empty() { 0 } else { 1 };
    Outcome {
        stdout,
        stderr,
        code,
    }
}
