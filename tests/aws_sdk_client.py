"""The AWS SDK for Python (boto3) against Switchboard's connections API.

Run by tests/aws_sdk.rs with: ENDPOINT REGION ACCESS_KEY SECRET CONNECTION_ID GONE_ID.
Prints one JSON object with what each call did; exits non-zero when a call does not behave
as API Gateway's Management API would.
"""

import json
import sys

import boto3
from botocore.config import Config

endpoint, region, key, secret, conn, gone = sys.argv[1:7]


def client(secret_key):
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}),
    )


api = client(secret)
out = {}

# PostToConnection reaches the WebSocket client.
api.post_to_connection(ConnectionId=conn, Data=b'{"from": "boto3"}')
out["posted"] = True

# GetConnection: timestamps parsed as datetimes, the identity's fields.
info = api.get_connection(ConnectionId=conn)
out["connectedAt"] = info["ConnectedAt"].isoformat()
out["lastActiveAt"] = info["LastActiveAt"].isoformat()
out["sourceIp"] = info["Identity"]["SourceIp"]
out["userAgent"] = info["Identity"]["UserAgent"]


def expect(exception, call):
    try:
        call()
    except exception as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise SystemExit(f"expected {exception.__name__}")


out["gone"] = expect(
    api.exceptions.GoneException,
    lambda: api.post_to_connection(ConnectionId=gone, Data=b"x"),
)
out["tooLarge"] = expect(
    api.exceptions.PayloadTooLargeException,
    lambda: api.post_to_connection(ConnectionId=conn, Data=b"x" * (128 * 1024 + 1)),
)
bad = client(secret + "-wrong")
out["forbidden"] = expect(
    bad.exceptions.ForbiddenException,
    lambda: bad.post_to_connection(ConnectionId=conn, Data=b"x"),
)

# DeleteConnection closes it; then it is gone.
api.delete_connection(ConnectionId=conn)
out["deleted"] = True
out["goneAfterDelete"] = expect(
    api.exceptions.GoneException,
    lambda: api.post_to_connection(ConnectionId=conn, Data=b"late"),
)

print(json.dumps(out))
