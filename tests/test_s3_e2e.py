"""The same job with S3 storage (moto over HTTP): the object exists with its content type, the URL works."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image
from temporalio.client import Client

from core.config import Settings
from tests.fixtures.s3 import s3_admin_client
from tests.fixtures.stack import make_settings, running_stack


def s3_overrides(s3_settings: Settings) -> dict[str, object]:
    names = (
        "STORAGE_BACKEND",
        "S3_BUCKET",
        "S3_ENDPOINT_URL",
        "S3_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    )
    return {name: getattr(s3_settings, name) for name in names}


def public_read(bucket: str) -> str:
    statement = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.mark.parametrize("public", [False, True], ids=["through-the-api", "public-base-url"])
async def test_job_stores_into_s3(
    public: bool, stack_settings: Settings, s3_settings: Settings, temporal_client: Client
) -> None:
    overrides = s3_overrides(s3_settings)
    bucket = str(overrides["S3_BUCKET"])
    if public:
        # A public bucket (or an R2 custom domain) serves objects without a signature.
        s3_admin_client(str(s3_settings.S3_ENDPOINT_URL)).put_bucket_policy(Bucket=bucket, Policy=public_read(bucket))
        overrides["S3_PUBLIC_BASE_URL"] = f"{s3_settings.S3_ENDPOINT_URL}/{bucket}"
    settings = make_settings(stack_settings, **overrides)
    async with running_stack(settings, temporal_client) as stack:
        started = await stack.start("harbour lights", promptSpec={"size": "300x200"})
        record = await stack.wait(started["jobId"])
        async with httpx.AsyncClient(follow_redirects=True) as http:
            image = await http.get(record["imageUrl"])

    assert record["status"] == "completed", record
    key = f"images/{started['workflowId']}/{started['jobId']}.png"
    head = s3_admin_client(str(s3_settings.S3_ENDPOINT_URL)).head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "image/png"
    if public:
        assert record["imageUrl"] == f"{s3_settings.S3_ENDPOINT_URL}/{bucket}/{key}"
    else:
        # No presigned URL is ever stored: the API's stable URL redirects to a fresh one.
        assert record["imageUrl"] == f"{settings.app_url}/files/{key}"
    assert image.status_code == 200
    assert Image.open(io.BytesIO(image.content)).size == (300, 200)
    assert record["thumbnailUrl"]
