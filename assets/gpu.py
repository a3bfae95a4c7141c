"""What a GPU-using asset declares: the ``gpu`` pool and the Kubernetes request for one GPU.

``pool="gpu"`` with ``default_limit: 1`` in dagster.yaml keeps two GPU steps off one device.
The ``dagster-k8s/config`` tag is read by the k8s run launcher / ``k8s_job_executor`` to give the
step's pod one ``nvidia.com/gpu`` and schedule it on GPU nodes; on a laptop it is ignored.
"""

from refinery.names import GPU_POOL

K8S_GPU_TAGS = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 1}}
        },
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
}


def gpu_asset_kwargs() -> dict:
    """Keyword arguments for ``@dg.asset`` on a step that may use a GPU."""
    return {"pool": GPU_POOL, "op_tags": K8S_GPU_TAGS}
