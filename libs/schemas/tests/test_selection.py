from ferry_schemas.selection import SelectorIndex, label_selector_query, server_match_labels


def test_matching_finds_every_selector_of_the_namespace_whose_pairs_the_labels_include() -> None:
    index: SelectorIndex[str] = SelectorIndex()
    index.put("ns/a", "ns", {"app": "x"}, "A")
    index.put("ns/b", "ns", {"app": "x", "tier": "gpu"}, "B")
    index.put("other/c", "other", {"app": "x"}, "C")
    index.put("ns/empty", "ns", {}, "E")  # selects nothing, as Kthena's webhook requires
    assert dict(index.matching("ns", {"app": "x"})) == {"ns/a": "A"}
    assert dict(index.matching("ns", {"app": "x", "tier": "gpu", "z": "1"})) == {"ns/a": "A", "ns/b": "B"}
    assert dict(index.matching("ns", {"tier": "gpu"})) == {}
    assert index.selects_any("other", {"app": "x"})
    assert not index.selects_any("third", {"app": "x"})
    assert "ns/empty" not in index
    assert len(index) == 3


def test_put_refiles_and_remove_returns_the_old_selector() -> None:
    index: SelectorIndex[None] = SelectorIndex()
    index.put("ns/a", "ns", {"app": "x"}, None)
    index.put("ns/a", "ns", {"app": "y"}, None)
    assert not index.selects_any("ns", {"app": "x"})
    assert index.selects_any("ns", {"app": "y"})
    assert index.remove("ns/a") == ("ns", (("app", "y"),))
    assert index.remove("ns/a") is None
    assert not index.selects_any("ns", {"app": "y"})


def test_server_match_labels_and_query() -> None:
    server = {"spec": {"workloadSelector": {"matchLabels": {"b": "2", "a": "1"}}}}
    labels = server_match_labels(server)
    assert labels == {"a": "1", "b": "2"}
    assert label_selector_query(tuple(sorted(labels.items()))) == "a=1,b=2"
    assert server_match_labels({"spec": {"workloadSelector": None}}) == {}
    assert server_match_labels({}) == {}
