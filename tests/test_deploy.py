"""Deployment files (issue #7): images, KubeRay manifests, the ``ray up`` cluster and docs/scaling.md.

Nothing here builds an image or talks to a cluster. The files are parsed and checked against:

- the README's install step (the Dockerfiles and ``ray up`` setup commands must run exactly it);
- pyproject.toml's pins (torch, the Ray requirement, the project version in image tags);
- KubeRay's RayCluster/RayJob fields (a JSON schema of the subset these files use, field names as in KubeRay's
  ``ray.io_rayclusters.yaml``/``ray.io_rayjobs.yaml`` CRDs, so a misspelt field fails);
- Kubernetes' own OpenAPI schemas for every pod template, from the ``kubernetes-validate`` package (bundled
  schemas, no network; the tests using it are skipped where it is not installed);
- Ray's own cluster-launcher schema (``ray.autoscaler``) for deploy/ray-cluster.yaml;
- the project's real CLI parser and job config for every ``xsam-pipeline`` command line in the manifests,
  their comments and docs/scaling.md, so a misspelt option fails here and not on the cluster.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from pydantic import ValidationError

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "cuda": DEPLOY / "Dockerfile.cuda"}
RAY_UP = DEPLOY / "ray-cluster.yaml"
SCALING_DOC = ROOT / "docs" / "scaling.md"
TORCH_INDEX = r"https://download\.pytorch\.org/whl/"
KUBERNETES_VERSION = "1.37"  # newest schema set kubernetes-validate 1.37 bundles; pod fields used are far older

#: Kubernetes resource.Quantity (the pattern KubeRay's CRDs carry).
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = re.compile(rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement(name: str) -> Requirement:
    for line in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == name:
            return requirement
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def _load(path: Path) -> list[dict]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} holds no YAML document"
    return documents


def _k8s_objects(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in _load(p) if d.get("kind") == kind]


# --------------------------------------------------------------------------- README install step


def _readme_install() -> list[str]:
    """The README's first command cut at ``&&``, without the demo run: the venv and the ``pip install`` steps."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md has no ```bash block"
    first = block.group(1).strip().splitlines()[0]
    steps = [s.strip() for s in first.split("&&")]
    install = [s for s in steps if "xsam-pipeline" not in s.split()[0]]
    assert any("pip install" in s for s in install), first
    return install


def _shell_steps(command: str) -> list[str]:
    return [s.strip() for s in re.split(r"&&|;", " ".join(command.split()))]


def _dockerfile_runs(path: Path) -> list[str]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]


def _dockerfile_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), re.MULTILINE))


def test_readme_install_step_is_what_the_tests_expect():
    assert _readme_install() == ["python3 -m venv .venv", ".venv/bin/pip install -e '.[demo]'"]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_runs_the_readme_install(flavour):
    """The README's venv and pip steps, verbatim and in order in one RUN, after torch from the PyTorch index."""
    path = DOCKERFILES[flavour]
    install = _readme_install()
    runs = [_shell_steps(run) for run in _dockerfile_runs(path)]
    matching = [steps for steps in runs if all(step in steps for step in install)]
    assert matching, f"{path.name}: no RUN holds {' && '.join(install)}"
    steps = matching[0]
    assert [steps.index(s) for s in install] == sorted(steps.index(s) for s in install)

    args = _dockerfile_args(path)
    torch = _requirement("torch")
    assert str(torch.specifier) == f"=={args['TORCH_VERSION']}", "the image must install the torch pyproject.toml pins"
    variant = {"cpu": "cpu", "cuda": r"cu\d+"}[flavour]
    assert re.fullmatch(TORCH_INDEX + variant, args["TORCH_INDEX"]), args["TORCH_INDEX"]
    torch_step = next(i for i, s in enumerate(steps) if "torch==${TORCH_VERSION}" in s and "--index-url" in s)
    assert "${TORCH_INDEX}" in steps[torch_step]
    assert torch_step < steps.index(install[-1]), "torch must come from the PyTorch index before the project install"

    ray = _requirement("ray")
    assert ray.specifier.contains(args["RAY_VERSION"]), f"RAY_VERSION {args['RAY_VERSION']} outside pyproject's {ray}"
    ray_step = next(i for i, s in enumerate(steps) if "ray[default]==${RAY_VERSION}" in s)
    assert ray_step < steps.index(install[-1])


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_installs_ffmpeg_and_no_cuda_in_the_cpu_image(flavour):
    path = DOCKERFILES[flavour]
    text = path.read_text()
    apt = " ".join(run for run in _dockerfile_runs(path) if "apt-get install" in run).split()
    assert "ffmpeg" in apt and "wget" in apt  # wget: KubeRay's health probes
    base = re.search(r"^FROM (\S+)", text, re.MULTILINE).group(1)
    if flavour == "cpu":
        assert re.fullmatch(r"python:3\.11-slim", base)
        assert "whl/cu" not in text
    else:
        assert base == "${CUDA_IMAGE}" and _dockerfile_args(path)["CUDA_IMAGE"].startswith("nvidia/cuda:")
        assert "runtime" in _dockerfile_args(path)["CUDA_IMAGE"]
    assert "ENV PATH=/app/.venv/bin:$PATH" in text  # ray start (KubeRay) and entrypoints find the venv's commands


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerignore_keeps_local_environments_out_of_the_build_context(flavour):
    ignore = Path(f"{DOCKERFILES[flavour]}.dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignore)


# --------------------------------------------------------------------------- every YAML file


def _all_yaml() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))


def test_deploy_yaml_files_are_the_expected_ones():
    names = {p.relative_to(DEPLOY).as_posix() for p in _all_yaml()}
    assert names == {"k8s/raycluster.yaml", "k8s/rayjob-archive.yaml", "k8s/rayjob-live.yaml", "ray-cluster.yaml"}


@pytest.mark.parametrize("path", _all_yaml(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_parses_to_mappings(path):
    for document in _load(path):
        assert isinstance(document, dict)
        if path.parent == K8S:
            assert document["apiVersion"] == "ray.io/v1" and document["kind"] in ("RayCluster", "RayJob")
            assert document["metadata"]["name"]


# --------------------------------------------------------------------------- KubeRay custom resources

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT = {"type": "object"}

#: The RayCluster/RayJob fields of KubeRay's ray.io/v1 CRDs (names as in ray.io_rayclusters.yaml and
#: ray.io_rayjobs.yaml); additionalProperties false so a misspelt field fails. Pod templates are left to the
#: Kubernetes schemas below.
_HEAD_GROUP = {
    "type": "object",
    "required": ["template"],
    "additionalProperties": False,
    "properties": {
        "rayStartParams": _STRING_MAP,  # map[string]string: "0", not 0
        "template": _OBJECT,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "headService": _OBJECT,
        "enableIngress": {"type": "boolean"},
    },
}
_WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "template"],
    "additionalProperties": False,
    "properties": {
        "groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "idleTimeoutSeconds": {"type": "integer"},
        "numOfHosts": {"type": "integer", "minimum": 1},
        "rayStartParams": _STRING_MAP,
        "template": _OBJECT,
        "scaleStrategy": _OBJECT,
        "suspend": {"type": "boolean"},
    },
}
RAY_CLUSTER_SPEC = {
    "type": "object",
    "required": ["rayVersion", "headGroupSpec", "workerGroupSpecs"],
    "additionalProperties": False,
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": _OBJECT,
        "headServiceAnnotations": _STRING_MAP,
        "gcsFaultToleranceOptions": _OBJECT,
        "suspend": {"type": "boolean"},
        "managedBy": {"type": "string"},
        "headGroupSpec": _HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "minItems": 1, "items": _WORKER_GROUP},
    },
}
RAY_JOB_SPEC = {
    "type": "object",
    "required": ["entrypoint"],
    "additionalProperties": False,
    "oneOf": [{"required": ["rayClusterSpec"]}, {"required": ["clusterSelector"]}],
    "properties": {
        "entrypoint": {"type": "string", "minLength": 1},
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "clusterSelector": _STRING_MAP,
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
        "backoffLimit": {"type": "integer", "minimum": 0},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "metadata": _STRING_MAP,
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "submitterPodTemplate": _OBJECT,
        "submitterConfig": _OBJECT,
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "entrypointResources": {"type": "string"},
        "deletionStrategy": _OBJECT,
        "managedBy": {"type": "string"},
        "suspend": {"type": "boolean"},
    },
}


def _cluster_specs() -> list[tuple[str, dict]]:
    specs = [(f"{p.name}:{d['metadata']['name']}", d["spec"]) for p, d in _k8s_objects("RayCluster")]
    specs += [
        (f"{p.name}:{d['metadata']['name']}", d["spec"]["rayClusterSpec"])
        for p, d in _k8s_objects("RayJob")
        if "rayClusterSpec" in d["spec"]
    ]
    return specs


def _pod_templates() -> list[tuple[str, dict]]:
    """(where, PodTemplateSpec) of every head and worker group, and RayJob submitter templates."""
    templates = []
    for where, spec in _cluster_specs():
        templates.append((f"{where}:head", spec["headGroupSpec"]["template"]))
        templates += [(f"{where}:{g['groupName']}", g["template"]) for g in spec["workerGroupSpecs"]]
    for path, job in _k8s_objects("RayJob"):
        if "submitterPodTemplate" in job["spec"]:
            templates.append((f"{path.name}:submitter", job["spec"]["submitterPodTemplate"]))
    return templates


def _ray_version() -> str:
    return _dockerfile_args(DOCKERFILES["cpu"])["RAY_VERSION"]


def test_there_is_a_raycluster_and_an_archive_and_a_live_rayjob():
    assert [d["metadata"]["name"] for _, d in _k8s_objects("RayCluster")] == ["xsam"]
    jobs = {p.name: d for p, d in _k8s_objects("RayJob")}
    assert set(jobs) == {"rayjob-archive.yaml", "rayjob-live.yaml"}
    assert jobs["rayjob-archive.yaml"]["spec"]["shutdownAfterJobFinishes"] is True
    assert jobs["rayjob-live.yaml"]["spec"]["shutdownAfterJobFinishes"] is False


def test_raycluster_matches_kuberay_fields():
    for path, cluster in _k8s_objects("RayCluster"):
        jsonschema.validate(cluster["spec"], RAY_CLUSTER_SPEC)


def test_rayjobs_match_kuberay_fields():
    for path, job in _k8s_objects("RayJob"):
        jsonschema.validate(job["spec"], RAY_JOB_SPEC)


def test_kuberay_schema_subset_rejects_misspelt_fields():
    """The subset schema is strict enough to be worth having."""
    (_, job), *_ = _k8s_objects("RayJob")
    for mutate in (
        lambda s: s.__setitem__("shutdownAfterJobFinish", True),
        lambda s: s["rayClusterSpec"]["headGroupSpec"].__setitem__("rayStartParam", {}),
        lambda s: s["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0),
        lambda s: s["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__("replica", 1),
        lambda s: s.__setitem__("clusterSelector", {"ray.io/cluster": "xsam"}),  # both a spec and a selector
    ):
        spec = copy.deepcopy(job["spec"])
        mutate(spec)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(spec, RAY_JOB_SPEC)


@pytest.mark.parametrize("where,spec", _cluster_specs(), ids=[w for w, _ in _cluster_specs()])
def test_cluster_groups_have_images_resources_and_consistent_replicas(where, spec):
    assert spec["rayVersion"] == _ray_version(), "rayVersion must be the Ray the images pin"
    version = _pyproject()["project"]["version"]
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    assert len({name for name, _ in groups}) == len(groups)
    for name, group in groups:
        containers = group["template"]["spec"]["containers"]
        assert containers, f"{where}:{name} has no container"
        ray_container = containers[0]  # KubeRay runs `ray start` in the first container
        image = ray_container["image"]
        resources = ray_container["resources"]
        gpus = int(resources.get("limits", {}).get("nvidia.com/gpu", 0))
        assert image == f"xsam-pipeline:{version}-{'cuda' if gpus else 'cpu'}", f"{where}:{name}: {image}"
        for key in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[key]), f"{where}:{name} {key}"
            for quantity in resources[key].values():
                assert QUANTITY.match(str(quantity)), f"{where}:{name}: {quantity!r} is no Kubernetes quantity"
        if gpus:
            assert resources["requests"].get("nvidia.com/gpu") == resources["limits"]["nvidia.com/gpu"]
        mounts = {m["mountPath"] for m in ray_container.get("volumeMounts", [])}
        assert {"/data/out", "/dev/shm"} <= mounts, f"{where}:{name}: outputs must be shared by every pod"
        if name != "head":
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{where}:{name}"


def test_raycluster_has_cpu_and_optional_gpu_groups():
    ((_, cluster),) = _k8s_objects("RayCluster")
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(gpu["nvidia.com/gpu"]) == 1  # one GPU per pod; segmenter actors take one GPU each
    assert groups["gpu"]["replicas"] == 0  # optional: off until GPU nodes are wanted
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_archive_job_reads_a_mounted_video_volume():
    ((_, job),) = [(p, d) for p, d in _k8s_objects("RayJob") if p.name == "rayjob-archive.yaml"]
    args = _parse_entrypoint(job["spec"]["entrypoint"])
    spec = job["spec"]["rayClusterSpec"]
    for template in [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]:
        mounts = {m["mountPath"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
        claims = {v["name"]: v for v in template["spec"]["volumes"]}
        for path in [*args.sources, str(args.prompts_file), str(args.out)]:
            mount = next((m for p, m in mounts.items() if path == p or path.startswith(p + "/")), None)
            assert mount, f"{path} is on no volume"
            assert "persistentVolumeClaim" in claims[mount["name"]], f"{path}: not on a shared volume"
        assert mounts[next(p for p in mounts if str(args.out).startswith(p))].get("readOnly") is not True


# --------------------------------------------------------------------------- Kubernetes schemas for pod templates


@pytest.mark.parametrize("where,template", _pod_templates(), ids=[w for w, _ in _pod_templates()])
def test_pod_templates_validate_against_kubernetes_schemas(where, template):
    """Each embedded PodTemplateSpec as a v1 PodTemplate, strict: unknown fields are errors."""
    import kubernetes_validate  # a test dependency
    resource = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template}
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {exc}")


def test_kubernetes_schemas_reject_a_misspelt_pod_field():
    import kubernetes_validate  # a test dependency
    template = copy.deepcopy(_pod_templates()[0][1])
    container = template["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    resource = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------- entrypoints through the real CLI


def _parse_entrypoint(command: str):
    from pipeline.cli import build_parser

    argv = shlex.split(command)
    assert argv[0] == "xsam-pipeline", command
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"xsam-pipeline rejects its arguments: {command}")


def _check_job_command(command: str, monkeypatch) -> None:
    """Parse with the real parser, then build the JobConfig and the prompts as `xsam-pipeline run` does."""
    from pipeline import cli
    from pipeline.config import ENV_PREFIX
    from pipeline.prompts import parse_prompt

    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    args = _parse_entrypoint(command)
    assert args.command == "run", command
    config = cli._config(args, sources=args.sources or None, prompts=args.prompt, prompts_file=args.prompts_file)
    assert config.sources and config.out_dir.is_absolute(), command
    for i, spec in enumerate(config.prompts):
        parse_prompt(spec, i)  # box/point syntax; scribble/mask files are not here
    assert config.prompts or config.prompts_file, f"no prompt: {command}"
    assert config.address == "auto", f"a cluster job must join the cluster (--address auto): {command}"


def _rayjob_entrypoints() -> list[tuple[str, str]]:
    """Archive-job entrypoints (``xsam-pipeline run``); the live job is checked on its own below."""
    jobs = [(p.name, d["spec"]["entrypoint"]) for p, d in _k8s_objects("RayJob")]
    return [(name, command) for name, command in jobs if command.split()[1] == "run"]


@pytest.mark.parametrize("where,entrypoint", _rayjob_entrypoints(), ids=[w for w, _ in _rayjob_entrypoints()])
def test_rayjob_entrypoints_parse_with_the_cli(where, entrypoint, monkeypatch):
    _check_job_command(entrypoint, monkeypatch)


def test_the_cli_check_catches_a_misspelt_option(monkeypatch):
    _, entrypoint = _rayjob_entrypoints()[0]
    with pytest.raises(pytest.fail.Exception):
        _parse_entrypoint(entrypoint.replace("--out ", "--output "))
    with pytest.raises(ValidationError):  # a sink name argparse does not check, pydantic does
        _check_job_command(entrypoint.replace("--sink jsonl", "--sink json"), monkeypatch)


def _documented_commands(path: Path) -> list[str]:
    """Every ``xsam-pipeline run`` command in a doc's code blocks or a YAML file's comments (continuations joined)."""
    lines = path.read_text().splitlines()
    if path.suffix == ".md":  # fenced code blocks only
        lines = "\n".join(
            re.findall(r"^\s*```\w*\n(.*?)^\s*```", path.read_text(), re.MULTILINE | re.DOTALL)
        ).splitlines()
    if path.suffix == ".yaml":  # comments only: the entrypoints themselves are checked above
        lines = [re.sub(r"^\s*#\s?", "", line) for line in lines if line.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [m.group(0).strip().rstrip("`") for m in re.finditer(r"xsam-pipeline run [^\n`]*", text)]


def _doc_commands() -> list[tuple[str, str]]:
    paths = [SCALING_DOC, RAY_UP, *sorted(K8S.glob("*.yaml"))]
    return [(f"{p.name}:{i}", c) for p in paths if p.exists() for i, c in enumerate(_documented_commands(p))]


def test_docs_show_job_commands():
    assert len([w for w, _ in _doc_commands() if w.startswith("scaling.md")]) >= 2


@pytest.mark.parametrize("where,command", _doc_commands(), ids=[w for w, _ in _doc_commands()])
def test_documented_commands_parse_with_the_cli(where, command, monkeypatch):
    _check_job_command(command, monkeypatch)


def test_live_job_runs_the_live_command_on_a_stream_url():
    from pipeline.prompts import parse_prompt

    ((_, job),) = [(p, d) for p, d in _k8s_objects("RayJob") if p.name == "rayjob-live.yaml"]
    args = _parse_entrypoint(job["spec"]["entrypoint"])
    assert args.command == "live" and args.sources[0].startswith("rtsp://")
    assert [parse_prompt(spec, i).kind for i, spec in enumerate(args.prompt)] == ["box"]
    assert str(args.out).startswith("/data/out")
    assert args.metrics_port == 9100 and args.metrics_address == "0.0.0.0"  # scraped from outside the driver pod
    assert args.api_port == 8080 and args.api_address == "0.0.0.0" and args.snapshot_every > 0
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {8080, 9100} <= {port["containerPort"] for port in head["ports"]}  # the driver's, on the head pod


# --------------------------------------------------------------------------- ray up


def _ray_up() -> dict:
    return yaml.safe_load(RAY_UP.read_text())


def test_ray_up_config_has_node_types():
    config = _ray_up()
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert config.get(key), key
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert {"cpu", "gpu"} <= set(types)
    assert config["provider"]["type"] in ("aws", "gcp", "azure")  # the local provider rejects node types


def test_ray_up_config_validates_against_rays_schema():
    """Ray's cluster launcher fills in the provider defaults and validates against ray-schema.json."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(_ray_up())))


def test_ray_up_setup_commands_run_the_readme_install():
    config = _ray_up()
    install = _readme_install()
    ray_pin = f"'ray[default]=={_ray_version()}'"
    torch_pin = f"torch=={str(_requirement('torch').specifier).removeprefix('==')}"
    gpu_setup = config["available_node_types"]["gpu"]["worker_setup_commands"]  # replaces setup_commands there
    node_setups = {"all": config["setup_commands"], "gpu": gpu_setup}
    for node, commands in node_setups.items():
        steps = [s.removeprefix("cd ~/xsam-pipeline").strip() for c in commands for s in _shell_steps(c)]
        assert all(step in steps for step in install), f"{node}: {commands}"
        torch = next(s for s in steps if torch_pin in s.replace("'", ""))
        assert re.search("--index-url " + TORCH_INDEX + ("cpu" if node == "all" else r"cu\d+"), torch)
        assert steps.index(torch) < steps.index(install[-1])
        assert any(ray_pin in s for s in steps), f"{node}: Ray must be pinned to {_ray_version()}"
    assert config["file_mounts"] == {"~/xsam-pipeline": "."}


# --------------------------------------------------------------------------- docs/scaling.md


def test_scaling_doc_names_what_the_code_uses():
    from pipeline.job import SUMMARY_FILE
    from pipeline.checkpoint import DONE_FILE

    text = SCALING_DOC.read_text()
    for needle in (
        "ray up deploy/ray-cluster.yaml",
        "ray job submit",
        "--working-dir",
        "--address auto",
        "kubectl apply -f deploy/k8s/raycluster.yaml",
        "deploy/k8s/rayjob-archive.yaml",
        "deploy/k8s/rayjob-live.yaml",
        DONE_FILE,
        SUMMARY_FILE,
        "segmenter_pool",
        "nvidia.com/gpu",
    ):
        assert needle in text, needle
