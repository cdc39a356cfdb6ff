"""The fleet's inventory: pyinfra's own format (https://docs.pyinfra.com/en/3.x/inventory-data.html). Copy
it (or point COMFYJOBS_FLEET_INVENTORY / --inventory at your copy) and name your hosts.

Groups are the roles: `redis` (exactly one host: the queue and every job record), `api` (the HTTP API;
the first one also checks the fleet), `gpu` (workers: `gpus=N` runs comfyjobs-worker@0..N-1, `cpu=True`
one CPU worker). A host may be in several groups. Host data is pyinfra's (`ssh_hostname`, `ssh_port`,
`ssh_user`, `ssh_key`, ... work unchanged) plus what comfyjobs reads (comfyjobs/fleet/hosts.py):

  fleet_address      how the other hosts reach this one (default: ssh_hostname): Redis binds to it
  install_root       the checkout, its .venv and ComfyUI (default /opt/comfyjobs)
  model_dir          models, e.g. a provider's block volume (default install_root/models)
  data_dir           DATA_DIR (default /var/lib/comfyjobs);   etc_dir: redis.conf (default /etc/comfyjobs)
  labels             WORKER_LABELS of its workers (manifest `requires: {labels: [...]}` pins workflows)
  api_port, api_bind, redis_port, comfyui_base_port   (defaults 8000, 0.0.0.0, 6379, 8188)
  repo_url, ref      where the checkout comes from and which commit (`fleet update --ref` overrides ref)
  install_args       extra install/install.sh options;   install_env: its environment (TORCH_INDEX_URL)
  fleet_env, env     settings written to the host's .env: the fleet's, then the host's own over them
  service_user       the system user the units run as (default comfyjobs; created by bootstrap)
  service_manager    auto (systemd where it runs), systemd, or fallback (README: "without systemd")

Secrets are not here: REDIS_PASSWORD (required), API_KEYS, ADMIN_API_KEYS, WEBHOOK_SECRET,
S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, HF_TOKEN, CIVITAI_TOKEN come from your environment or from
deploy/fleet/secrets.env (never committed: .gitignore), and are written to each host's .env (mode 0600).
"""

# (Names starting with "_" are not groups.) Settings every host gets, not secrets: the shared bucket...
_FLEET = {
    "ssh_user": "root",
    "ssh_key": "~/.ssh/id_ed25519",
    "fleet_env": {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": "comfyjobs-media",
        "S3_REGION": "us-east-1",
        "PUBLIC_URL": "https://jobs.example.com",
    },
}

# One host for Redis and the API, on the private network (10.0.0.x) the GPU hosts reach it by.
_API_HOST = ("api-1", {**_FLEET, "ssh_hostname": "203.0.113.10", "fleet_address": "10.0.0.10"})

redis = [_API_HOST]
api = [_API_HOST]

gpu = [
    # Two GPUs, models on the provider's block volume.
    ("gpu-a100-1", {**_FLEET, "ssh_hostname": "203.0.113.21", "gpus": 2, "model_dir": "/mnt/models"}),
    # One 80 GB card for the video workflows (manifest: requires: {labels: [video]}); CUDA 12.6 torch.
    (
        "gpu-h100-1",
        {
            **_FLEET,
            "ssh_hostname": "203.0.113.22",
            "gpus": 1,
            "labels": ["video", "80gb"],
            "install_env": {"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu126"},
        },
    ),
]
