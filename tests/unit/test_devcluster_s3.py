"""The dev cluster's S3 (SeaweedFS ``weed mini``) holds as many buckets as a test session or a user creates."""

from __future__ import annotations

import uuid

from chitu_devcluster.s3 import MAX_VOLUMES

#: More buckets than weed mini's automatic volume limit allows on a disk with under 120 GiB free (CI's and this
#: machine's), and more than a whole test session creates.
BUCKETS = 120


def test_every_new_bucket_takes_writes(seaweedfs):
    # Each bucket is a collection with its own volume: with the automatic limit (free disk / 1 GiB) the writes to
    # the buckets past it failed with InternalError, which failed CI's last S3 tests.
    assert MAX_VOLUMES > BUCKETS
    client = seaweedfs.client(retries={"max_attempts": 1})
    written = []
    for index in range(BUCKETS):
        name = f"cap-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        client.put_object(Bucket=name, Key="probe", Body=f"bucket {index}".encode())
        written.append(name)
    assert client.get_object(Bucket=written[-1], Key="probe")["Body"].read() == f"bucket {BUCKETS - 1}".encode()
    assert set(written) <= {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
