from ferry_schemas.labels import MS_NAME
from ferry_schemas.models.provider import CREDENTIAL_LABEL
from ferry_watcher.backoff import Backoff
from ferry_watcher.credentials import CredentialInformer
from ferry_watcher.resources import WATCHED
from ferry_watcher.snapshot import StoredEntry


def test_paths_cover_every_kind_and_namespace_restriction() -> None:
    paths = {w.plural: w for w in WATCHED}
    assert paths["pods"].path(None) == "/api/v1/pods"
    assert paths["pods"].path("dev") == "/api/v1/namespaces/dev/pods"
    assert paths["pods"].label_selector is None  # filtered by ferry_watcher.pods, not by the API server
    assert paths["modelroutes"].path(None) == "/apis/networking.serving.volcano.sh/v1alpha1/modelroutes"
    assert paths["podgroups"].path("a") == "/apis/scheduling.volcano.sh/v1beta1/namespaces/a/podgroups"
    lws = "/apis/leaderworkerset.x-k8s.io/v1/namespaces/a/leaderworkersets"
    assert paths["leaderworkersets"].path("a") == lws
    assert set(paths) == {
        "modelboosters", "modelservings", "autoscalingpolicies", "autoscalingpolicybindings",
        "modelservers", "modelroutes", "externalmodelproviders", "podgroups", "pods", "leaderworkersets",
        "secrets",  # only provider credentials (label selector)
        "services", "controllerrevisions",  # what the applier writes besides Ferry's kinds
    }  # fmt: skip
    assert paths["services"].label_selector == paths["controllerrevisions"].label_selector == MS_NAME
    assert paths["secrets"].label_selector == f"{CREDENTIAL_LABEL}=true"
    assert paths["controllerrevisions"].path("a") == "/apis/apps/v1/namespaces/a/controllerrevisions"


def test_backoff_grows_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0)
    delays = [backoff.delay() for _ in range(5)]
    assert 0.8 <= delays[0] <= 1.2
    assert all(d <= 4.0 * 1.2 for d in delays)
    assert delays[-1] >= 4.0 * 0.8
    backoff.reset()
    assert backoff.delay() <= 1.2


def test_stored_entry_recognises_tombstones() -> None:
    assert StoredEntry("s", "uid/12/DELETED").tombstone
    assert not StoredEntry("s", "uid/12/LIVE").tombstone


def test_credentials_are_published_with_data_and_without_annotations() -> None:
    secret = {
        "metadata": {
            "name": "key", "namespace": "a", "uid": "u", "resourceVersion": "7",
            "labels": {CREDENTIAL_LABEL: "true"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...sk-123...}"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "type": "Opaque",
        "data": {"apiKey": "c2stMTIz"},
    }  # fmt: skip
    slim = CredentialInformer.slim(None, secret)  # type: ignore[arg-type]
    assert slim == {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"apiKey": "c2stMTIz"},
        "metadata": {"name": "key", "namespace": "a", "uid": "u", "resourceVersion": "7",
                     "labels": {CREDENTIAL_LABEL: "true"}},
    }  # fmt: skip
