"""Rendezvous hashing of keys over live members (:mod:`ferry_schemas.runtime.members`)."""

from __future__ import annotations

from collections import Counter

from ferry_schemas.runtime.members import members_bucket, owner, weight

KEYS = [f"modelservings/ns-{i % 7}/serving-{i}" for i in range(2000)]
MEMBERS = ["host-a/11/aaaaaa", "host-b/12/bbbbbb", "host-c/13/cccccc"]


def assignment(members: list[str]) -> dict[str, str | None]:
    return {key: owner(key, members) for key in KEYS}


def test_the_weight_is_the_same_in_every_process() -> None:
    # blake2b, not hash(): two replicas (two processes, two PYTHONHASHSEEDs) must agree
    assert weight("host-a/11/aaaaaa", "modelservings/ns/x").hex() == "afe22f1aaeabfd2f"


def test_every_key_has_one_owner_and_the_keys_spread() -> None:
    owners = assignment(MEMBERS)
    counts = Counter(owners.values())
    assert set(counts) == set(MEMBERS)
    assert all(500 < count < 830 for count in counts.values()), counts  # about a third each
    assert assignment(list(reversed(MEMBERS))) == owners  # the order members are listed in is irrelevant


def test_a_departed_members_keys_move_and_no_other_key_does() -> None:
    before = assignment(MEMBERS)
    after = assignment(MEMBERS[:2])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == MEMBERS[2]}
    assert {after[key] for key in moved} == set(MEMBERS[:2])  # spread over both survivors


def test_a_new_member_takes_keys_from_the_others_only_for_itself() -> None:
    before = assignment(MEMBERS[:2])
    after = assignment(MEMBERS)
    assert all(after[key] in (before[key], MEMBERS[2]) for key in KEYS)


def test_no_members_no_owner_and_bucket_names() -> None:
    assert owner("k", []) is None
    assert owner("k", ["only"]) == "only"
    assert members_bucket("ferry-applier") == "ferry_applier_members"
    assert members_bucket("status") == "ferry_status_members"
