//! ListInstances and the tag actions against a live mqgate: each account
//! sees and tags its own instances only; tags round-trip, page, filter,
//! respect Alibaba's limits, and survive a restart; a RAM user needs the
//! action on `*`.

mod common;

use common::{TWO_ACCOUNTS, TestServer};
use mqgate::config::Config;

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect()
}

async fn tag(t: &TestServer, instance: &str, tags: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut params: Vec<(String, String)> = vec![
        ("ResourceType".into(), "instance".into()),
        ("ResourceId.1".into(), instance.into()),
    ];
    for (n, (key, value)) in tags.iter().enumerate() {
        params.push((format!("Tag.{}.Key", n + 1), key.to_string()));
        params.push((format!("Tag.{}.Value", n + 1), value.to_string()));
    }
    let borrowed: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    t.call("TagResources", &borrowed).await
}

#[tokio::test]
async fn each_account_lists_and_tags_its_own_instances() {
    let t = TestServer::start(TWO_ACCOUNTS).await;
    let (status, body) = t.call("ListInstances", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["inst-a1", "inst-a2"]);
    assert_eq!(body["Instances"][0]["RegionId"], "cn-shanghai");
    assert_eq!(body["Instances"][0]["InstanceStatus"], 5);
    assert!(body["Instances"][0]["CreateTime"].as_i64().unwrap() > 0);
    let (_, other) = t
        .call_as(("key-b", "secret-b"), "POST", "ListInstances", &[])
        .await;
    assert_eq!(ids(&other), ["inst-b1"]);

    let (status, body) = tag(&t, "inst-a1", &[("env", "prod"), ("team", "iot")]).await;
    assert_eq!(
        (status, body["Data"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    // A key it has gets the new value.
    tag(&t, "inst-a1", &[("env", "staging")]).await;
    let (_, body) = t.call("ListInstances", &[]).await;
    assert_eq!(
        body["Instances"][0]["MqttTags"],
        serde_json::json!([{"TagKey": "env", "TagValue": "staging"}, {"TagKey": "team", "TagValue": "iot"}])
    );
    assert_eq!(body["Instances"][1]["MqttTags"], serde_json::json!([]));
    // Filtered by tags (JSON, as Alibaba's page shows).
    let (_, body) = t
        .call(
            "ListInstances",
            &[("Tags", r#"[{"key":"env","value":"staging"}]"#)],
        )
        .await;
    assert_eq!(ids(&body), ["inst-a1"]);
    let (_, body) = t
        .call(
            "ListInstances",
            &[("Tags", r#"[{"key":"env","value":"prod"}]"#)],
        )
        .await;
    assert_eq!(ids(&body), Vec::<String>::new());
    let (status, body) = t.call("ListInstances", &[("Tags", "env=prod")]).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("InvalidParameter.Tags")),
        "{body}"
    );

    // Another account's instance: refused, nothing written.
    let (status, body) = tag(&t, "inst-b1", &[("env", "x")]).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("MqttOwnerCheckError")),
        "{body}"
    );
    let (_, body) = t
        .call_as(("key-b", "secret-b"), "POST", "ListInstances", &[])
        .await;
    assert_eq!(body["Instances"][0]["MqttTags"], serde_json::json!([]));

    // Alibaba's limits: 20 tags per instance, reserved prefixes.
    let many: Vec<(String, String)> = (0..19)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, body) = tag(&t, "inst-a2", &many[..18]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = tag(&t, "inst-a2", &[("k18", "v"), ("k19", "v")]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = tag(&t, "inst-a2", &[("one-too-many", "v")]).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("InvalidParameter.Tag")),
        "{body}"
    );
    let (status, body) = tag(&t, "inst-a2", &[("aliyun-x", "v")]).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("InvalidParameter.Tag")),
        "{body}"
    );

    // Untag by key, then all.
    let untag = |params: Vec<(&'static str, &'static str)>| {
        let mut all = vec![("ResourceType", "instance"), ("ResourceId.1", "inst-a1")];
        all.extend(params);
        all
    };
    let (status, body) = t
        .call("UntagResources", &untag(vec![("TagKey.1", "team")]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = t.call("ListInstances", &[]).await;
    assert_eq!(
        body["Instances"][0]["MqttTags"],
        serde_json::json!([{"TagKey": "env", "TagValue": "staging"}])
    );
    let (status, body) = t.call("UntagResources", &untag(vec![])).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("InvalidParameter.TagKey")),
        "{body}"
    );
    let (status, _) = t
        .call("UntagResources", &untag(vec![("All", "true")]))
        .await;
    assert_eq!(status, 200);
    let (_, body) = t.call("ListInstances", &[]).await;
    assert_eq!(body["Instances"][0]["MqttTags"], serde_json::json!([]));

    // A RAM user without the action on * is denied, with Alibaba's answer.
    let (status, body) = t
        .call_as(("ops-key", "ops-secret"), "POST", "ListInstances", &[])
        .await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (403, Some("Forbidden.RAM")),
        "{body}"
    );
    t.server.shutdown().await;
}

/// Three instances of 20 tags each: ListTagResources walks the 60 entries
/// page by page (50 a page), each exactly once, in order; it narrows by
/// instance and by tag; and tags are still there after a restart.
#[tokio::test]
async fn tags_page_filter_and_survive_a_restart() {
    let config = r#"
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
[[accounts]]
id = "111"
  [[accounts.instances]]
  id = "i1"
  [[accounts.instances]]
  id = "i2"
  [[accounts.instances]]
  id = "i3"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
"#;
    let t = TestServer::start(config).await;
    for instance in ["i1", "i2", "i3"] {
        let tags: Vec<(String, String)> = (0..20)
            .map(|i| (format!("key{i:02}"), format!("{instance}-{i}")))
            .collect();
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, body) = tag(&t, instance, &tags).await;
        assert_eq!(status, 200, "{body}");
    }
    let (all, pages) = walk(&t, vec![]).await;
    assert_eq!((all.len(), pages), (60, 2));
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, all, "entries out of order or repeated");
    let (one, _) = walk(&t, vec![("ResourceId.1".into(), "i2".into())]).await;
    assert_eq!(one.len(), 20);
    assert!(one.iter().all(|(i, _, _)| i == "i2"));
    let (by_tag, _) = walk(
        &t,
        vec![
            ("Tag.1.Key".into(), "key07".into()),
            ("Tag.1.Value".into(), "i3-7".into()),
        ],
    )
    .await;
    assert_eq!(
        by_tag,
        [("i3".to_string(), "key07".to_string(), "i3-7".to_string())]
    );
    let (_, created) = t.call("ListInstances", &[]).await;

    // A restart on the same storage keeps every tag and the creation times.
    let storage = t.storage;
    t.server.shutdown().await;
    let text = format!(
        "{config}\n[storage]\ndir = {:?}\n",
        storage.path().display().to_string()
    );
    let server = mqgate::server::Server::start(Config::parse(&text, "t.toml").unwrap())
        .await
        .unwrap();
    let t = TestServer {
        endpoint: format!("http://{}", server.http_addr),
        mqtt: server.mqtt_addr,
        server,
        storage,
    };
    let (again, _) = walk(&t, vec![]).await;
    assert_eq!(again, all);
    let (_, listed) = t.call("ListInstances", &[]).await;
    assert_eq!(listed["Instances"], created["Instances"]);
    t.server.shutdown().await;
}

/// Every page of ListTagResources with these filters: (instance, key,
/// value) in the order given, and the number of pages.
async fn walk(
    t: &TestServer,
    filters: Vec<(String, String)>,
) -> (Vec<(String, String, String)>, usize) {
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("ResourceType".to_string(), "instance".to_string())];
        params.extend(filters.clone());
        if let Some(next) = &next {
            params.push(("NextToken".into(), next.clone()));
        }
        let borrowed: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body) = t.call("ListTagResources", &borrowed).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for entry in body["TagResources"].as_array().unwrap() {
            seen.push((
                entry["ResourceId"].as_str().unwrap().to_string(),
                entry["TagKey"].as_str().unwrap().to_string(),
                entry["TagValue"].as_str().unwrap().to_string(),
            ));
        }
        match body["NextToken"].as_str() {
            Some(token) => next = Some(token.to_string()),
            None => return (seen, pages),
        }
    }
}
