"""ListInstances, TagResources, UntagResources and ListTagResources through
the official Tea SDK (alibabacloud-onsmqtt20200420), in both signature modes.

What the Rust tests (tests/instances_tags.rs) do not: the SDK's own
serialization of lists (ResourceId.N, Tag.N.Key/Tag.N.Value, TagKey.N, the
boolean All, the JSON Tags of ListInstances) and its reading of the answers.

The session's mqgate is shared: the test account has two instances
(INSTANCE, STRICT_INSTANCE) whose tags every test here sees. So each test
uses tag keys of its own (a random prefix), asserts on those keys only, and
removes them when it ends (the `cleanup` fixture, also on failure). Two
instances hold at most 2 x 20 = 40 tags, fewer than a 50-entry page of
ListTagResources: paging past 50 is walked on a second mqgate of this
module (`pager`), whose account has instances of its own.
"""

import json
import secrets

import pytest
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import INSTANCE, OTHER_INSTANCE, STRICT_INSTANCE, run_mqgate
from test_tea_sdk import MODE_IDS, MODES
from test_tea_sdk import tea as plain_tea

OWN = sorted([INSTANCE, STRICT_INSTANCE])
OTHER_KEY, OTHER_SECRET = "other-key", "other-secret"  # account 2222222222: OTHER_INSTANCE

PAGER_KEY, PAGER_SECRET = "pager-key", "pager-secret"
PAGER_INSTANCES = ["mqtt-cn-page1", "mqtt-cn-page2", "mqtt-cn-page3"]
# Only the All=true test tags it, so that removing every tag removes no
# other test's.
PAGER_ALL_INSTANCE = "mqtt-cn-page9"
PAGER_ACCOUNT = """
[[accounts]]
id = "3333333333"
  [accounts.limits]
  ListInstances = 1000
  TagResources = 1000
  UntagResources = 1000
  ListTagResources = 1000
{instances}
  [[accounts.users]]
  name = "root"
  access_key_id = "{key}"
  access_key_secret = "{secret}"
  root = true
""".format(
    instances="\n".join(
        f'  [[accounts.instances]]\n  id = "{i}"' for i in PAGER_INSTANCES + [PAGER_ALL_INSTANCE]
    ),
    key=PAGER_KEY,
    secret=PAGER_SECRET,
)

mode_param = pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)


@pytest.fixture(scope="module")
def pager():
    """A second mqgate whose first account (3333333333) has four instances
    of its own: 3 x 20 tags make 60 entries, more than one page."""
    yield from run_mqgate(PAGER_ACCOUNT)


def tea(gate, mode, *login):
    return plain_tea(gate, mode, *login)


def prefix():
    return f"sdk-{secrets.token_hex(4)}"


def expect_error(call):
    with pytest.raises(ClientException) as raised:
        call()
    return raised.value


# -- the four actions, as the SDK's request models take them ---------------


def tag(client, ids, pairs):
    return client.tag_resources(
        models.TagResourcesRequest(
            resource_id=list(ids),
            resource_type="instance",
            tag=[models.TagResourcesRequestTag(key=k, value=v) for k, v in pairs],
        )
    ).body


def untag(client, ids, keys=None, all=None):
    return client.untag_resources(
        models.UntagResourcesRequest(
            resource_id=list(ids), resource_type="instance", tag_key=keys, all=all
        )
    ).body


def list_tags(client, ids=None, tags=None, next_token=None):
    """One page; `tags` is a list of (key, value or None)."""
    return client.list_tag_resources(
        models.ListTagResourcesRequest(
            resource_id=ids,
            resource_type="instance",
            tag=None if tags is None else [models.ListTagResourcesRequestTag(key=k, value=v) for k, v in tags],
            next_token=next_token,
        )
    ).body


def walk(client, ids=None, tags=None):
    """Every page: ([(instance, key, value)] in the order given, [page sizes])."""
    entries, sizes, token = [], [], None
    while True:
        body = list_tags(client, ids, tags, token)
        assert (body.code, body.success) == ("200", "true")
        assert len(body.request_id) == 36
        sizes.append(len(body.tag_resources))
        for e in body.tag_resources:
            assert e.resource_type == "instance"
            entries.append((e.resource_id, e.tag_key, e.tag_value))
        token = body.next_token
        if token is None:
            return entries, sizes
        assert len(sizes) < 10, "NextToken never ends"


def list_instances(client, tags=None):
    body = client.list_instances(models.ListInstancesRequest(tags=tags)).body
    assert (body.code, body.success, body.message) == ("200", "true", "operation success.")
    return body.instances


def instance_tags(client, keys):
    """{instance: {key: value}} of every instance ListInstances gives,
    restricted to `keys`."""
    return {
        i.instance_id: {t.tag_key: t.tag_value for t in i.mqtt_tags if t.tag_key in keys}
        for i in list_instances(client)
    }


def mine(entries, keys):
    return [e for e in entries if e[1] in keys]


def assert_done(body):
    assert (body.code, body.data, body.message) == ("200", True, "operation success.")
    assert len(body.request_id) == 36


@pytest.fixture
def cleanup():
    """cleanup(client, ids, keys): untag those keys when the test ends, even
    when it fails (a key an instance does not have is ignored)."""
    pending = []
    yield lambda client, ids, keys: pending.append((client, list(ids), list(keys)))
    for client, ids, keys in reversed(pending):
        for start in range(0, len(keys), 20):
            untag(client, ids, keys[start : start + 20])


# -- tests ----------------------------------------------------------------


@mode_param
def test_round_trip(mqgate, cleanup, mode):
    client = tea(mqgate, mode)
    p = prefix()
    a, b = f"{p}-a", f"{p}-b"
    keys = {a, b}
    cleanup(client, OWN, keys)
    # Not sorted on the way in: ResourceId.1 is STRICT_INSTANCE.
    assert_done(tag(client, [STRICT_INSTANCE, INSTANCE], [(b, "two words+é/&="), (a, "1")]))

    instances = list_instances(client)
    assert [i.instance_id for i in instances] == OWN
    for i in instances:
        assert i.instance_name == i.instance_id
        assert (i.instance_status, i.instance_type) == (5, 2)
        assert i.create_time > 0
        assert i.kernel_version.startswith("mqgate-")
        assert i.region_id
        assert (i.expire_time, i.order_id, i.specific) == (None, None, None)
        ours = [(t.tag_key, t.tag_value) for t in i.mqtt_tags if t.tag_key in keys]
        assert ours == [(a, "1"), (b, "two words+é/&=")]
        every = [t.tag_key for t in i.mqtt_tags]
        assert every == sorted(every)
    assert {i.instance_id: i.region_id for i in instances}[INSTANCE] == "cn-hangzhou"
    assert [i.create_time for i in list_instances(client)] == [i.create_time for i in instances]

    # Every tag of the account: one short page, sorted by instance then key.
    entries, sizes = walk(client)
    assert len(sizes) == 1 and sizes[0] <= 40
    assert entries == sorted(set(entries))
    assert mine(entries, keys) == [(i, k, v) for i in OWN for k, v in [(a, "1"), (b, "two words+é/&=")]]
    # Narrowed by instance (ResourceId.1) and by tag (Tag.1.Key, Tag.2.Key).
    assert walk(client, ids=[STRICT_INSTANCE], tags=[(b, None), (a, None)]) == (
        [(STRICT_INSTANCE, a, "1"), (STRICT_INSTANCE, b, "two words+é/&=")], [2]
    )
    assert walk(client, tags=[(b, "two words+é/&=")]) == ([(i, b, "two words+é/&=") for i in OWN], [2])
    assert walk(client, tags=[(a, "other value")]) == ([], [0])

    # A key it has gets the new value, on that instance only; a tag without
    # a value (no Tag.1.Value) holds "".
    assert_done(tag(client, [INSTANCE], [(a, "updated"), (f"{p}-c", None)]))
    keys.add(f"{p}-c")
    cleanup(client, OWN, [f"{p}-c"])
    assert instance_tags(client, keys) == {
        INSTANCE: {a: "updated", b: "two words+é/&=", f"{p}-c": ""},
        STRICT_INSTANCE: {a: "1", b: "two words+é/&="},
    }
    assert walk(client, tags=[(a, "updated")])[0] == [(INSTANCE, a, "updated")]

    # Untag one key (TagKey.1) of one instance.
    assert_done(untag(client, [INSTANCE], [b]))
    assert instance_tags(client, keys) == {
        INSTANCE: {a: "updated", f"{p}-c": ""},
        STRICT_INSTANCE: {a: "1", b: "two words+é/&="},
    }
    # Untag all of ours (TagKey.1..3, ResourceId.1..2; a key an instance
    # does not have is ignored).
    assert_done(untag(client, OWN, sorted(keys)))
    assert instance_tags(client, keys) == {INSTANCE: {}, STRICT_INSTANCE: {}}
    assert mine(walk(client)[0], keys) == []


@mode_param
def test_untag_needs_keys_or_all(mqgate, pager, cleanup, mode):
    client = tea(mqgate, mode)
    p = prefix()
    cleanup(client, [INSTANCE], [p])
    assert_done(tag(client, [INSTANCE], [(p, "v")]))
    for call in [
        lambda: untag(client, [INSTANCE]),
        lambda: untag(client, [INSTANCE], all=False),  # the SDK sends All=False
    ]:
        e = expect_error(call)
        assert (e.status_code, e.code) == (400, "InvalidParameter.TagKey"), e.message
    e = expect_error(lambda: untag(client, [], [p]))
    assert (e.status_code, e.code) == (400, "InvalidParameter.ResourceId"), e.message
    assert instance_tags(client, {p})[INSTANCE] == {p: "v"}

    # All=true (the SDK sends All=True), on an instance no other test tags.
    client = tea(pager, mode, PAGER_KEY, PAGER_SECRET)
    cleanup(client, [PAGER_INSTANCES[0]], [p])
    assert_done(tag(client, [PAGER_ALL_INSTANCE, PAGER_INSTANCES[0]], [(p, "v"), (f"{p}-2", "w")]))
    cleanup(client, [PAGER_INSTANCES[0]], [f"{p}-2"])
    assert_done(untag(client, [PAGER_ALL_INSTANCE], all=True))
    assert walk(client, ids=[PAGER_ALL_INSTANCE]) == ([], [0])
    assert instance_tags(client, {p, f"{p}-2"})[PAGER_ALL_INSTANCE] == {}
    # The other instance keeps its tags.
    assert walk(client, ids=[PAGER_INSTANCES[0]], tags=[(p, None), (f"{p}-2", None)])[0] == [
        (PAGER_INSTANCES[0], p, "v"), (PAGER_INSTANCES[0], f"{p}-2", "w"),
    ]


@mode_param
def test_another_accounts_instance_is_refused(mqgate, cleanup, mode):
    client = tea(mqgate, mode)
    other = tea(mqgate, mode, OTHER_KEY, OTHER_SECRET)
    p = prefix()
    cleanup(client, OWN, [p])
    cleanup(other, [OTHER_INSTANCE], [p])

    refused = [
        lambda: tag(client, [OTHER_INSTANCE], [(p, "x")]),
        # All or nothing: an own instance beside it is not tagged either.
        lambda: tag(client, [INSTANCE, OTHER_INSTANCE], [(p, "x")]),
        lambda: tag(client, ["mqtt-cn-nosuch0001"], [(p, "x")]),
        lambda: untag(client, [OTHER_INSTANCE], [p]),
        lambda: untag(client, [OTHER_INSTANCE], all=True),
        lambda: list_tags(client, ids=[OTHER_INSTANCE]),
        lambda: list_tags(client, ids=[INSTANCE, OTHER_INSTANCE]),
        # And the other way round.
        lambda: tag(other, [INSTANCE], [(p, "x")]),
        lambda: untag(other, [INSTANCE], all=True),
        lambda: list_tags(other, ids=[INSTANCE]),
    ]
    for call in refused:
        e = expect_error(call)
        assert (e.status_code, e.code) == (400, "MqttOwnerCheckError"), e.message
    e = expect_error(lambda: tag(client, [OTHER_INSTANCE], [(p, "x")]))
    assert OTHER_INSTANCE in e.message
    assert instance_tags(client, {p}) == {INSTANCE: {}, STRICT_INSTANCE: {}}

    # Each account sees its own instances and tags only.
    assert [i.instance_id for i in list_instances(other)] == [OTHER_INSTANCE]
    assert_done(tag(other, [OTHER_INSTANCE], [(p, "theirs")]))
    assert_done(tag(client, [INSTANCE], [(p, "ours")]))
    assert walk(other, tags=[(p, None)])[0] == [(OTHER_INSTANCE, p, "theirs")]
    assert walk(client, tags=[(p, None)])[0] == [(INSTANCE, p, "ours")]
    assert [i.instance_id for i in list_instances(client, json.dumps([{"key": p}]))] == [INSTANCE]
    assert [i.instance_id for i in list_instances(other, json.dumps([{"key": p}]))] == [OTHER_INSTANCE]
    # Untagging its own instance leaves the other account's tag.
    assert_done(untag(client, [INSTANCE], [p]))
    assert walk(other, tags=[(p, None)])[0] == [(OTHER_INSTANCE, p, "theirs")]


@mode_param
def test_twenty_tags_at_most(mqgate, cleanup, mode):
    client = tea(mqgate, mode)
    p = prefix()
    keys = [f"{p}-{n:02}" for n in range(22)]
    cleanup(client, OWN, keys)

    # 21 in one call: the SDK sends Tag.21.Key, refused, nothing written.
    e = expect_error(lambda: tag(client, OWN, [(k, "v") for k in keys[:21]]))
    assert (e.status_code, e.code) == (400, "InvalidParameter.Tag"), e.message
    assert instance_tags(client, set(keys)) == {INSTANCE: {}, STRICT_INSTANCE: {}}

    # Fill STRICT_INSTANCE up to 20 with keys of ours (other tests' tags
    # count too, but they remove theirs when they end).
    held = len(walk(client, ids=[STRICT_INSTANCE])[0])
    assert held < 20, f"{STRICT_INSTANCE} holds {held} tags another test left"
    fill = keys[: 20 - held]
    assert_done(tag(client, [STRICT_INSTANCE], [(k, "v") for k in fill]))
    assert len(walk(client, ids=[STRICT_INSTANCE])[0]) == 20
    # A key it has may still change value: the instance still holds 20.
    assert_done(tag(client, [STRICT_INSTANCE], [(fill[0], "changed")]))

    # One more key: refused, and nothing of that call is written, not even
    # the value of a key it has, nor the tag on the instance beside it.
    new = keys[21]
    for call in [
        lambda: tag(client, [STRICT_INSTANCE], [(new, "x")]),
        lambda: tag(client, [STRICT_INSTANCE], [(fill[0], "again"), (new, "x")]),
        lambda: tag(client, [INSTANCE, STRICT_INSTANCE], [(new, "x")]),
    ]:
        e = expect_error(call)
        assert (e.status_code, e.code) == (400, "InvalidParameter.Tag"), e.message
        assert STRICT_INSTANCE in e.message
    ours = instance_tags(client, set(keys))
    assert ours[INSTANCE] == {}
    assert ours[STRICT_INSTANCE] == {k: ("changed" if k == fill[0] else "v") for k in fill}

    # Once one is removed, one more fits.
    assert_done(untag(client, [STRICT_INSTANCE], [fill[-1]]))
    assert_done(tag(client, [STRICT_INSTANCE], [(new, "x")]))
    assert instance_tags(client, {new})[STRICT_INSTANCE] == {new: "x"}


@mode_param
def test_tag_keys_and_values_as_alibaba_allows(mqgate, cleanup, mode):
    client = tea(mqgate, mode)
    p = prefix()
    longest = (p + "x" * 128)[:128]
    cleanup(client, [INSTANCE], [longest, p])
    for pairs in [
        [("aliyun-x", "v")],
        [("Aliyun", "v")],
        [("acs:x", "v")],
        [("ACS:x", "v")],
        [(p, "v"), ("aliyunx", "v")],  # the reserved one second: nothing written
        [(longest + "y", "v")],
        [(p, "v" * 129)],
        [("", "v")],
        [(p, "1"), (p, "2")],
    ]:
        e = expect_error(lambda: tag(client, [INSTANCE], pairs))
        assert (e.status_code, e.code) == (400, "InvalidParameter.Tag"), (pairs, e.message)
    assert instance_tags(client, {p, longest})[INSTANCE] == {}
    # 128 characters each, and a key that only contains "aliyun" or "acs:".
    assert_done(tag(client, [INSTANCE], [(longest, "é" * 128), (p, "aliyun acs:")]))
    assert instance_tags(client, {p, longest})[INSTANCE] == {longest: "é" * 128, p: "aliyun acs:"}
    e = expect_error(
        lambda: client.tag_resources(
            models.TagResourcesRequest(
                resource_id=[INSTANCE], resource_type="cluster",
                tag=[models.TagResourcesRequestTag(key=p, value="v")],
            )
        )
    )
    assert (e.status_code, e.code) == (400, "InvalidParameter.ResourceType"), e.message


@mode_param
def test_list_instances_tags_filter(mqgate, cleanup, mode):
    client = tea(mqgate, mode)
    p = prefix()
    env, team = f"{p}-env", f"{p}-team"
    odd = "a b+é&=\"[]"  # JSON- and form-special characters in a value
    cleanup(client, OWN, [env, team])
    assert_done(tag(client, [INSTANCE], [(env, "prod"), (team, odd)]))
    assert_done(tag(client, [STRICT_INSTANCE], [(env, "dev")]))

    def ids(filters):
        return [i.instance_id for i in list_instances(client, filters)]

    assert ids(json.dumps([{"key": env, "value": "prod"}])) == [INSTANCE]
    assert ids(json.dumps([{"key": env, "value": "dev"}])) == [STRICT_INSTANCE]
    assert ids(json.dumps([{"key": env}])) == OWN  # any value
    assert ids(json.dumps([{"key": env, "value": "prod"}, {"key": team, "value": odd}])) == [INSTANCE]
    assert ids(json.dumps([{"key": team, "value": odd}], ensure_ascii=False)) == [INSTANCE]
    assert ids(json.dumps([{"key": env, "value": "dev"}, {"key": team}])) == []  # every one listed
    assert ids(json.dumps([{"key": env, "value": "staging"}])) == []
    assert ids(json.dumps([{"key": f"{p}-nosuch"}])) == []
    assert ids(json.dumps([{"key": env.upper()}])) == []  # keys are case-sensitive
    assert ids("[]") == OWN
    assert ids("") == OWN
    assert ids(None) == OWN
    # A kept instance lists all its tags, not only those filtered on.
    (kept,) = list_instances(client, json.dumps([{"key": env, "value": "prod"}]))
    assert [(t.tag_key, t.tag_value) for t in kept.mqtt_tags if t.tag_key in (env, team)] == [
        (env, "prod"), (team, odd),
    ]


@mode_param
@pytest.mark.parametrize(
    "tags",
    [
        "env=prod",
        '{"key": "env", "value": "prod"}',
        '[{"value": "prod"}]',
        '[{"key": 1}]',
        '[{"key": "env", "value": 1}]',
        '["env"]',
        "[",
        "null",
    ],
    ids=["query-style", "object", "no-key", "key-number", "value-number", "strings", "truncated", "null"],
)
def test_list_instances_bad_tags_json(mqgate, mode, tags):
    e = expect_error(lambda: tea(mqgate, mode).list_instances(models.ListInstancesRequest(tags=tags)))
    assert (e.status_code, e.code) == (400, "InvalidParameter.Tags"), e.message
    assert "Tags" in e.message


@mode_param
def test_list_tag_resources_short_result_and_bad_parameters(mqgate, cleanup, mode):
    client = tea(mqgate, mode)
    p = prefix()
    keys = [f"{p}-{n:02}" for n in range(3)]
    cleanup(client, OWN, keys)
    assert_done(tag(client, OWN, [(k, str(n)) for n, k in enumerate(keys)]))
    # A short result: one page, no NextToken.
    body = list_tags(client, tags=[(k, None) for k in keys])
    assert body.next_token is None
    assert [(e.resource_id, e.tag_key, e.tag_value) for e in body.tag_resources] == [
        (i, k, str(n)) for i in OWN for n, k in enumerate(keys)
    ]
    # A repeated instance counts once; ResourceId.50 fits, ResourceId.51 does not.
    assert walk(client, ids=[INSTANCE, INSTANCE] * 25, tags=[(keys[0], None)])[0] == [
        (INSTANCE, keys[0], "0")
    ]
    e = expect_error(lambda: list_tags(client, ids=[INSTANCE] * 51))
    assert (e.status_code, e.code) == (400, "InvalidParameter.ResourceId"), e.message
    # Tag.20 fits, Tag.21 does not.
    twenty = [(k, None) for k in keys] + [(f"{p}-none-{n}", None) for n in range(17)]
    assert len(walk(client, tags=twenty)[0]) == 6
    e = expect_error(lambda: list_tags(client, tags=twenty + [(f"{p}-21", None)]))
    assert (e.status_code, e.code) == (400, "InvalidParameter.Tag"), e.message
    for token in ["not-hex", "00ff", "6e6f2d6e756c"]:  # bad hex, not UTF-8, no separator
        e = expect_error(lambda: list_tags(client, next_token=token))
        assert (e.status_code, e.code) == (400, "InvalidParameter.NextToken"), (token, e.message)
    e = expect_error(lambda: client.list_tag_resources(models.ListTagResourcesRequest()))
    assert (e.status_code, e.code) == (400, "InvalidParameter.ResourceType"), e.message


@mode_param
def test_pages_of_fifty(pager, cleanup, mode):
    """Past one page: 3 instances x 20 tags, set in one call (ResourceId.1..3,
    Tag.1..20), walked 50 + 10 by NextToken, with and without filters."""
    client = tea(pager, mode, PAGER_KEY, PAGER_SECRET)
    keys = [f"key{n:02}" for n in range(20)]
    cleanup(client, PAGER_INSTANCES, keys)
    assert_done(tag(client, PAGER_INSTANCES, [(k, f"v{n}") for n, k in enumerate(keys)]))
    assert_done(tag(client, [PAGER_INSTANCES[2]], [("key07", "special")]))
    expected = [
        (i, k, "special" if (i, k) == (PAGER_INSTANCES[2], "key07") else f"v{n}")
        for i in PAGER_INSTANCES
        for n, k in enumerate(keys)
    ]

    # Each entry exactly once, in order; NextToken on the first page only.
    assert walk(client) == (expected, [50, 10])
    assert walk(client, ids=PAGER_INSTANCES) == (expected, [50, 10])
    # The 20 keys as a filter (Tag.1..20.Key), with the 4 instances.
    assert walk(client, ids=PAGER_INSTANCES + [PAGER_ALL_INSTANCE], tags=[(k, None) for k in keys]) == (
        expected, [50, 10],
    )
    # The page boundary falls inside the third instance.
    first = list_tags(client)
    assert first.next_token and len(first.tag_resources) == 50
    assert (first.tag_resources[-1].resource_id, first.tag_resources[-1].tag_key) == (PAGER_INSTANCES[2], "key09")
    # A token continues whatever the filters; the filters still apply.
    second = list_tags(client, ids=[PAGER_INSTANCES[2]], tags=[("key07", None), ("key10", None)],
                       next_token=first.next_token)
    assert second.next_token is None
    assert [(e.resource_id, e.tag_key, e.tag_value) for e in second.tag_resources] == [
        (PAGER_INSTANCES[2], "key10", "v10")
    ]
    # Narrowed to one instance, or to one tag: one short page.
    assert walk(client, ids=[PAGER_INSTANCES[1]]) == (
        [e for e in expected if e[0] == PAGER_INSTANCES[1]], [20],
    )
    assert walk(client, tags=[("key07", "special")]) == ([(PAGER_INSTANCES[2], "key07", "special")], [1])
    assert walk(client, tags=[("key07", "v7")]) == (
        [(PAGER_INSTANCES[0], "key07", "v7"), (PAGER_INSTANCES[1], "key07", "v7")], [2],
    )
    # ListInstances lists them with all 20 tags each.
    listed = {i.instance_id: [(t.tag_key, t.tag_value) for t in i.mqtt_tags] for i in list_instances(client)}
    assert sorted(listed) == sorted(PAGER_INSTANCES + [PAGER_ALL_INSTANCE])
    for i in PAGER_INSTANCES:
        assert listed[i] == [(k, v) for (j, k, v) in expected if j == i]

    # Once a page's worth is removed, one page.
    assert_done(untag(client, PAGER_INSTANCES, keys[:4]))
    assert walk(client, ids=PAGER_INSTANCES) == ([e for e in expected if e[1] not in keys[:4]], [48])
