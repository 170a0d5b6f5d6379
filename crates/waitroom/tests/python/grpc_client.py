"""A grpcio client of weir's waitroom, its stubs generated from the repository's .proto at run time (grpc_tools),
as a user of the origin's API would. Usage: grpc_client.py PROTO_ROOT ADDRESS EVENT_ID. Prints one JSON object:
what each call returned, the codes of the refused ones, and the position updates streamed to the first session
until it left the queue."""
import json
import os
import sys
import tempfile
import threading

import grpc
from grpc_tools import protoc

proto_root, address, event = sys.argv[1], sys.argv[2], sys.argv[3]
out = tempfile.mkdtemp()
include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
if protoc.main(["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
                "waitroom/v1/waitroom.proto"]) != 0:
    sys.exit("protoc failed")
sys.path.insert(0, out)
from waitroom.v1 import waitroom_pb2 as pb  # noqa: E402
from waitroom.v1 import waitroom_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(address)
stub = rpc.WaitroomServiceStub(channel)
result = {}

health = stub.HealthCheck(pb.HealthCheckRequest(), timeout=10)
result["health"] = {"status": health.status, "service": health.service, "kafka_enabled": health.kafka_enabled}

first = stub.JoinQueue(pb.JoinQueueRequest(user_id="py-1", event_id=event, user_agent="grpcio"), timeout=10)
second = stub.JoinQueue(pb.JoinQueueRequest(user_id="py-2", event_id=event, priority=0), timeout=10)
result["joined"] = [{"session_id": j.session_id, "position": j.position, "queue_length": j.queue_length,
                     "websocket_url": j.websocket_url, "queued_at": j.queued_at.seconds} for j in (first, second)]


def refused(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


result["duplicate"] = refused(lambda: stub.JoinQueue(pb.JoinQueueRequest(user_id="py-1", event_id=event), timeout=10))
result["bad_priority"] = refused(
    lambda: stub.JoinQueue(pb.JoinQueueRequest(user_id="py-3", event_id=event, priority=11), timeout=10))
result["unknown"] = refused(lambda: stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id="nope"), timeout=10))

status = stub.GetQueueStatus(pb.GetQueueStatusRequest(session_id=second.session_id), timeout=10)
result["status"] = {"status": pb.SessionStatus.Name(status.status), "position": status.position,
                    "estimated_wait_seconds": status.estimated_wait_seconds}

# The first session's stream, read on a thread while the test (told on stdout) unpauses admission.
updates = []
stream = stub.StreamQueuePosition(pb.StreamQueuePositionRequest(session_id=first.session_id), timeout=60)


def read():
    for u in stream:
        updates.append({"status": pb.SessionStatus.Name(u.status), "position": u.position,
                        "token": bool(u.checkout_token)})


reader = threading.Thread(target=read)
reader.start()
print("STREAMING", flush=True)
reader.join(60)
result["updates"] = updates

left = stub.LeaveQueue(pb.LeaveQueueRequest(session_id=second.session_id), timeout=10)
result["left"] = left.message
result["leave_again"] = refused(
    lambda: stub.LeaveQueue(pb.LeaveQueueRequest(session_id=second.session_id), timeout=10))
print(json.dumps(result), flush=True)
