//! The action table (`src/api.rs`) is the one list of actions: the README's
//! action table and `openapi/mqgate.yaml` name the same actions with the
//! same RAM actions. Adding an action without describing it in both, or
//! describing one that the table does not have, fails here.

use mqgate::api::Action;
use std::collections::BTreeMap;
use yaml_rust2::{Yaml, YamlLoader};

fn read(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Action -> RAM action, from the table in code.
fn table() -> BTreeMap<String, String> {
    Action::ALL
        .iter()
        .map(|a| (a.name().to_string(), a.ram_action().to_string()))
        .collect()
}

/// Rows of the README's table under `## What it answers`: "| `Action` |
/// `mq:...` | ...".
fn readme() -> BTreeMap<String, String> {
    let text = read("README.md");
    let section = text
        .split("\n## What it answers")
        .nth(1)
        .expect("README has a '## What it answers' section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let unquote = |c: &str| c.trim_matches('`').to_string();
        let (action, ram) = (unquote(cells[1]), unquote(cells[2]));
        assert!(
            rows.insert(action.clone(), ram).is_none(),
            "README lists {action} twice"
        );
    }
    rows
}

/// The OpenAPI document's actions: the `Action` parameter's enum, and the
/// `x-action` / `x-ram-action` of each `{Action}Response` schema.
fn openapi() -> (Vec<String>, BTreeMap<String, String>) {
    let docs = YamlLoader::load_from_str(&read("openapi/mqgate.yaml")).unwrap();
    let schemas = &docs[0]["components"]["schemas"];
    let names: Vec<String> = schemas["RpcParameters"]["properties"]["Action"]["enum"]
        .as_vec()
        .expect("RpcParameters.Action has an enum")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut answers = BTreeMap::new();
    let Yaml::Hash(schemas) = schemas else {
        panic!("components.schemas is not a map");
    };
    for (name, schema) in schemas {
        let name = name.as_str().unwrap();
        if let Some(action) = schema["x-action"].as_str() {
            assert_eq!(name, format!("{action}Response"), "schema of {action}");
            let ram = schema["x-ram-action"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no x-ram-action"));
            answers.insert(action.to_string(), ram.to_string());
        }
    }
    (names, answers)
}

#[test]
fn the_readme_lists_every_action_with_its_ram_action() {
    assert_eq!(readme(), table());
}

#[test]
fn the_openapi_document_describes_every_action_with_its_ram_action() {
    let (names, answers) = openapi();
    let table = table();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        table.keys().cloned().collect::<Vec<_>>(),
        "Action enum"
    );
    assert_eq!(
        answers, table,
        "x-ram-action of the {{Action}}Response schemas"
    );
}
