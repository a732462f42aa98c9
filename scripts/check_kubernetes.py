"""Checks deploy/kubernetes without a cluster.

Every manifest must pass Kubernetes' own schema (strict: an unknown field is
an error) for KUBERNETES_VERSION, and the manifests must agree with each
other and with the sale:
  - every Service selects the pods of a Deployment, on a port they name;
  - every role of the server runs in exactly one Deployment;
  - every ConfigMap, Secret and volume claim a pod refers to is defined;
  - the storm is an Indexed Job whose completions and parallelism are the
    SHARDS its shards are told, each shard told its index and the common
    start, and it writes its documents and histories where the merge
    reads them;
  - the kustomization lists files that exist.

With --self-test, it first breaks copies of the manifests in each of those
ways and fails unless every break is caught.
"""

import copy
import pathlib
import shlex
import sys

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.31.0"
# The roles of `flashtix-server --role` (server/src/runtime/config.rs).
ROLES = {"api", "relay", "payments", "orders", "sweeper", "notifications"}


def load(directory):
    """Every resource of every manifest, as (file name, resource)."""
    resources = []
    for path in sorted(directory.glob("*.yaml")):
        for resource in yaml.safe_load_all(path.read_text()):
            if resource:
                resources.append((path.name, resource))
    return resources


def problems(resources, directory):
    """What is wrong with the manifests, as sentences."""
    found = []
    by_kind = {}
    for name, resource in resources:
        by_kind.setdefault(resource["kind"], []).append((name, resource))
        if resource["kind"] == "Kustomization":
            for listed in resource.get("resources", []):
                if not (directory / listed).exists():
                    found.append(f"{name}: lists {listed}, which does not exist")
            continue
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(p) for p in error.path)
            found.append(f"{name}: {resource['kind']} {where}: {error.message}")
    names = lambda kind: {r["metadata"]["name"] for _, r in by_kind.get(kind, [])}
    config_maps, secrets, claims = names("ConfigMap"), names("Secret"), names("PersistentVolumeClaim")

    pods = []  # (file, owner, pod template)
    for kind in ("Deployment", "Job"):
        for name, resource in by_kind.get(kind, []):
            pods.append((name, resource, resource["spec"]["template"]))

    roles = {}
    for name, owner, template in pods:
        spec = template["spec"]
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source and source["configMapRef"]["name"] not in config_maps:
                    found.append(f"{name}: no ConfigMap {source['configMapRef']['name']}")
                if "secretRef" in source and source["secretRef"]["name"] not in secrets:
                    found.append(f"{name}: no Secret {source['secretRef']['name']}")
            for variable in container.get("env", []):
                if owner["kind"] == "Deployment" and variable["name"] == "FLASHTIX_ROLE":
                    for role in variable["value"].split(","):
                        roles.setdefault(role, []).append(owner["metadata"]["name"])
        for volume in spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and claim not in claims:
                found.append(f"{name}: no PersistentVolumeClaim {claim}")
    for role in sorted(ROLES | set(roles)):
        runners = roles.get(role, [])
        if role not in ROLES:
            found.append(f"{', '.join(runners)}: {role} is not a role of the server")
        elif len(runners) != 1:
            found.append(f"role {role} runs in {len(runners)} Deployments ({', '.join(runners)})")

    for name, service in by_kind.get("Service", []):
        selector = service["spec"].get("selector", {})
        selected = [
            template
            for _, owner, template in pods
            if owner["kind"] == "Deployment"
            and selector
            and selector.items() <= template["metadata"].get("labels", {}).items()
        ]
        if not selected:
            found.append(f"{name}: Service {service['metadata']['name']} selects no Deployment's pods")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for template in selected:
                named = {
                    p.get("name") if isinstance(target, str) else p["containerPort"]
                    for c in template["spec"]["containers"]
                    for p in c.get("ports", [])
                }
                if target not in named:
                    found.append(f"{name}: Service port {port['port']} goes to {target}, which the pods do not open")

    storms = [(n, r) for n, r in by_kind.get("Job", []) if r["metadata"]["name"] == "flashtix-storm"]
    if len(storms) != 1:
        found.append("no Job flashtix-storm")
    for name, job in storms:
        spec = job["spec"]
        settings = next(
            (r["data"] for _, r in by_kind.get("ConfigMap", []) if r["metadata"]["name"] == "flashtix-storm"),
            {},
        )
        shards = settings.get("SHARDS")
        if spec.get("completionMode") != "Indexed":
            found.append(f"{name}: the storm Job is not Indexed: its pods would not know their shard")
        if not (str(spec.get("completions")) == str(spec.get("parallelism")) == str(shards)):
            found.append(
                f"{name}: completions {spec.get('completions')} and parallelism "
                f"{spec.get('parallelism')} must both be SHARDS ({shards}): every shard at once"
            )
        command = " ".join(spec["template"]["spec"]["containers"][0].get("args", []))
        words = shlex.split(command)
        for needed in ("--shard", "--start-at", "--json", "--history"):
            if needed not in words:
                found.append(f"{name}: the storm's command lacks {needed}")
        if value_of(words, "--shard") != "$JOB_COMPLETION_INDEX/$SHARDS":
            found.append(f"{name}: the storm's --shard is not $JOB_COMPLETION_INDEX/$SHARDS")
        merges = [(n, r) for n, r in by_kind.get("Job", []) if r["metadata"]["name"] == "flashtix-merge"]
        if len(merges) != 1:
            found.append("no Job flashtix-merge")
        for merge_name, merge in merges:
            written = results_dir(job)
            read = results_dir(merge)
            if written is None or read is None or written != read:
                found.append(
                    f"{merge_name}: the merge reads {read and read[1]} of claim {read and read[0]}, "
                    f"the storm writes to {written and written[1]} of claim {written and written[0]}"
                )
                continue
            directory = written[1]
            for flag, suffix in (("--json", "json"), ("--history", "jsonl")):
                wanted = f"{directory}/shard$JOB_COMPLETION_INDEX.{suffix}"
                if value_of(words, flag) != wanted:
                    found.append(f"{name}: the storm's {flag} is {value_of(words, flag)}, not {wanted}")
            merge_words = shlex.split(
                " ".join(merge["spec"]["template"]["spec"]["containers"][0].get("args", []))
            )
            documents = merge_words[merge_words.index("merge") + 1] if "merge" in merge_words else None
            if documents != f"{directory}/shard*.json":
                found.append(f"{merge_name}: the merge reads documents {documents}, not {directory}/shard*.json")
            if value_of(merge_words, "--history") != f"{directory}/shard*.jsonl":
                found.append(f"{merge_name}: the merge does not read {directory}/shard*.jsonl")
    return found


def value_of(words, flag):
    """The word after the first `flag` in `words`, if any."""
    return words[words.index(flag) + 1] if flag in words[:-1] else None


def results_dir(job):
    """(claim, mount path) of a Job's first container's volume from a claim."""
    spec = job["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    for mount in spec["containers"][0].get("volumeMounts", []):
        if mount["name"] in claims:
            return claims[mount["name"]], mount["mountPath"]
    return None


def breaks(resources):
    """Copies of the manifests, each broken one way, named."""
    def broken(what, said, change):
        """`change` gets the resources by (kind, name), and the Kustomization."""
        copied = copy.deepcopy(resources)
        named = {(r["kind"], r["metadata"]["name"]): r for _, r in copied if "metadata" in r}
        named["Kustomization"] = next(r for _, r in copied if r["kind"] == "Kustomization")
        change(named)
        return what, said, copied

    def set_in(key, path, value):
        def change(resources):
            node = resources[key]
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
        return change

    api = ("Deployment", "flashtix-api")
    storm = ("Job", "flashtix-storm")
    merge = ("Job", "flashtix-merge")
    by_name = {(r["kind"], r["metadata"]["name"]): r for _, r in resources if "metadata" in r}
    storm_args = by_name[storm]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    merge_args = by_name[merge]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    return [
        broken("a count that is not a number", "spec.replicas: 'two' is not of type 'integer'",
               set_in(api, ["spec", "replicas"], "two")),
        broken("a field Kubernetes does not know", "'replica' was unexpected",
               set_in(api, ["spec", "replica"], 2)),
        broken("a Service that selects nothing", "selects no Deployment's pods",
               set_in(("Service", "flashtix-api"), ["spec", "selector"], {"app": "nothing"})),
        broken("a role in no Deployment", "role sweeper runs in 0 Deployments",
               set_in(("Deployment", "flashtix-sweeper"),
                      ["spec", "template", "spec", "containers", 0, "env", 0, "value"], "api")),
        broken("shards that disagree", "must both be SHARDS",
               set_in(storm, ["spec", "completions"], 3)),
        broken("a storm that is not Indexed", "is not Indexed",
               set_in(storm, ["spec", "completionMode"], "NonIndexed")),
        broken("a missing Secret", "no Secret nope",
               set_in(api, ["spec", "template", "spec", "containers", 0, "envFrom", 1, "secretRef", "name"],
                      "nope")),
        broken("a pod port the Service does not reach", "which the pods do not open",
               set_in(api, ["spec", "template", "spec", "containers", 0, "ports", 0, "name"], "web")),
        broken("a missing ConfigMap", "no ConfigMap nope",
               set_in(storm, ["spec", "template", "spec", "containers", 0, "envFrom", 0, "configMapRef", "name"],
                      "nope")),
        broken("a missing volume claim", "no PersistentVolumeClaim nope",
               set_in(storm, ["spec", "template", "spec", "volumes", 0, "persistentVolumeClaim", "claimName"],
                      "nope")),
        broken("a role the server does not have", "payment is not a role of the server",
               set_in(("Deployment", "flashtix-payments"),
                      ["spec", "template", "spec", "containers", 0, "env", 0, "value"], "payment")),
        broken("shards not told their common start", "lacks --start-at",
               set_in(storm, ["spec", "template", "spec", "containers", 0, "args", 0],
                      "exec flashtix storm --shard \"$JOB_COMPLETION_INDEX/$SHARDS\" --json /results/x --history /results/y")),
        broken("a merge reading elsewhere", "the merge reads /data",
               set_in(merge, ["spec", "template", "spec", "containers", 0, "volumeMounts", 0, "mountPath"], "/data")),
        broken("a merge without the histories", "does not read /results/shard*.jsonl",
               set_in(merge, ["spec", "template", "spec", "containers", 0, "args", 0],
                      "flashtix merge /results/shard*.json --json /results/storm.json")),
        broken("a kustomization listing a missing file", "lists gone.yaml, which does not exist",
               lambda resources: resources["Kustomization"]["resources"].append("gone.yaml")),
        broken("documents written elsewhere", "the storm's --json is /tmp/shard.json",
               set_in(storm, ["spec", "template", "spec", "containers", 0, "args", 0],
                      storm_args.replace('--json "/results/shard$JOB_COMPLETION_INDEX.json"',
                                         "--json /tmp/shard.json"))),
        broken("histories written elsewhere", "the storm's --history is /tmp/h.jsonl",
               set_in(storm, ["spec", "template", "spec", "containers", 0, "args", 0],
                      storm_args.replace('--history "/results/shard$JOB_COMPLETION_INDEX.jsonl"',
                                         "--history /tmp/h.jsonl"))),
        broken("a merge of the histories as documents", "the merge reads documents /results/shard*.jsonl",
               set_in(merge, ["spec", "template", "spec", "containers", 0, "args", 0],
                      merge_args.replace("merge /results/shard*.json ", "merge /results/shard*.jsonl "))),
    ]


def main():
    directory = pathlib.Path(sys.argv[-1])
    resources = load(directory)
    if "--self-test" in sys.argv:
        for what, said, copied in breaks(resources):
            found = problems(copied, directory)
            if not any(said in problem for problem in found):
                print(f"self-test: {what} was not caught (found: {found})", file=sys.stderr)
                return 1
            print(f"self-test: {what}: caught")
    found = problems(resources, directory)
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        return 1
    print(f"{len(resources)} resources in {directory}: valid for Kubernetes {KUBERNETES_VERSION}, and consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
