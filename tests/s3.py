"""An S3 endpoint for the tests: moto's standalone server, a separate process speaking the S3 wire protocol
over HTTP. boto3 talks to it unchanged (endpoint URL and test credentials); nothing is patched."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import requests

from tests.support import free_port, wait_for

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Endpoint:
    url: str

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name

    def env(self, bucket: str) -> dict[str, str]:
        """What a comfyjobs process needs to use this endpoint (STORAGE_BACKEND=s3)."""
        return {
            **CREDENTIALS,
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": self.url,
            "S3_REGION": REGION,
            "S3_ADDRESSING_STYLE": "path",
        }


def run_moto(log_dir: Path) -> Iterator[S3Endpoint]:
    port = free_port()
    log = (log_dir / "moto.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"moto's server exited; see {log_dir / 'moto.log'}")
        try:
            return requests.get(url, timeout=2).status_code < 500
        except requests.ConnectionError:
            return False

    try:
        wait_for(answers, timeout_s=60, what="moto's S3 server", interval_s=0.2)
        yield S3Endpoint(url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
