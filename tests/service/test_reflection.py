"""Server reflection answers under grpc.reflection.v1 as well as v1alpha.

The v1 client here is built from the published v1 layout written out below (grpc-proto's
grpc/reflection/v1/reflection.proto: message, field, number, type, oneof), not from the
daemon's code, and talks to a real server over the v1 method path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import running_server

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {"string": F.TYPE_STRING, "int32": F.TYPE_INT32, "bytes": F.TYPE_BYTES}
# The published grpc.reflection.v1 messages: (field, number, type, oneof).
V1_LAYOUT: dict[str, list[tuple[str, int, str, str | None]]] = {
    "ServerReflectionRequest": [
        ("host", 1, "string", None),
        ("file_by_filename", 3, "string", "message_request"),
        ("file_containing_symbol", 4, "string", "message_request"),
        ("file_containing_extension", 5, "ExtensionRequest", "message_request"),
        ("all_extension_numbers_of_type", 6, "string", "message_request"),
        ("list_services", 7, "string", "message_request"),
    ],
    "ExtensionRequest": [("containing_type", 1, "string", None), ("extension_number", 2, "int32", None)],
    "ServerReflectionResponse": [
        ("valid_host", 1, "string", None),
        ("original_request", 2, "ServerReflectionRequest", None),
        ("file_descriptor_response", 4, "FileDescriptorResponse", "message_response"),
        ("all_extension_numbers_response", 5, "ExtensionNumberResponse", "message_response"),
        ("list_services_response", 6, "ListServiceResponse", "message_response"),
        ("error_response", 7, "ErrorResponse", "message_response"),
    ],
    "FileDescriptorResponse": [("file_descriptor_proto", 1, "repeated bytes", None)],
    "ExtensionNumberResponse": [("base_type_name", 1, "string", None), ("extension_number", 2, "repeated int32", None)],
    "ListServiceResponse": [("service", 1, "repeated ServiceResponse", None)],
    "ServiceResponse": [("name", 1, "string", None)],
    "ErrorResponse": [("error_code", 1, "int32", None), ("error_message", 2, "string", None)],
}
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def published_v1_file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="published/v1/reflection.proto",
                                               package="grpc.reflection.v1", syntax="proto3")
    for name, fields in V1_LAYOUT.items():
        message = proto.message_type.add(name=name)
        oneofs: list[str] = []
        for field_name, number, kind, oneof in fields:
            repeated = kind.startswith("repeated ")
            kind = kind.removeprefix("repeated ")
            field = message.field.add(name=field_name, number=number,
                                      label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if kind in SCALARS:
                field.type = SCALARS[kind]
            else:
                field.type, field.type_name = F.TYPE_MESSAGE, f".grpc.reflection.v1.{kind}"
            if oneof is not None:
                if oneof not in oneofs:
                    oneofs.append(oneof)
                    message.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs.index(oneof)
    return proto


def layout(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, list[tuple[str, int, int, int, str, str | None]]]:
    return {
        m.name: [(f.name, f.number, f.type, f.label, f.type_name.rsplit(".", 1)[-1],
                  m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None) for f in m.field]
        for m in proto.message_type
    }


def v1_classes() -> tuple[Any, ...]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(published_v1_file())
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))
                 for name in ("ServerReflectionRequest", "ServerReflectionResponse"))


async def ask_v1(address: str, *requests: dict[str, str]) -> list[Any]:
    request_cls, response_cls = v1_classes()

    async def stream() -> AsyncIterator[Any]:
        for r in requests:
            yield request_cls(**r)

    async with grpc.aio.insecure_channel(address) as ch:
        call = ch.stream_stream(V1_METHOD, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=response_cls.FromString)
        return [r async for r in call(stream())]


async def test_v1_lists_services_and_describes_the_api() -> None:
    async with running_server() as srv:
        listing, api, itself = await ask_v1(
            srv.address, {"list_services": ""}, {"file_containing_symbol": "memoryd.v1.MemoryService"},
            {"file_containing_symbol": "grpc.reflection.v1.ServerReflection"})
    names = {s.name for s in listing.list_services_response.service}
    assert names == {"memoryd.v1.MemoryService", "grpc.health.v1.Health",
                     "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in api.file_descriptor_response.file_descriptor_proto]
    memory = next(f for f in files if f.package == "memoryd.v1" and f.service)
    assert "MemoryService" in [s.name for s in memory.service]
    # What the daemon serves as grpc.reflection.v1 has the published v1 layout.
    (served,) = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in itself.file_descriptor_response.file_descriptor_proto]
    assert served.package == "grpc.reflection.v1"
    assert layout(served) == layout(published_v1_file())
    (method,) = served.service[0].method
    assert (method.input_type, method.output_type, method.client_streaming, method.server_streaming) == (
        ".grpc.reflection.v1.ServerReflectionRequest", ".grpc.reflection.v1.ServerReflectionResponse", True, True)


async def test_v1alpha_still_answers() -> None:
    async with running_server() as srv, grpc.aio.insecure_channel(srv.address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = [r async for r in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"memoryd.v1.MemoryService", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
