"""Server reflection under both names: ``grpc.reflection.v1`` and ``grpc.reflection.v1alpha``.

grpcio-reflection (1.85) implements only v1alpha, while newer tools ask for the stable
v1 name first. v1 is the same protocol
under another package: every message, field name, number, type and oneof of
grpc-proto's ``grpc/reflection/v1/reflection.proto`` equals v1alpha's (checked field by
field; ``tests/service/test_reflection.py`` pins the published v1 layout). So a v1
request or response has exactly the bytes of its v1alpha counterpart, and the v1 method
is served by the same servicer with the v1alpha codecs. Its file descriptor (v1alpha's,
renamed) is added to the descriptor pool, so reflection describes itself under both names.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
SERVICE_NAMES = (V1_SERVICE, V1ALPHA_SERVICE)


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's reflection.proto as v1: the package and the type references renamed."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{V1ALPHA_PACKAGE}.", f".{V1_PACKAGE}."
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    proto.ClearField("options")  # language package options name v1alpha's generated code
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old):]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    return proto


def _register_v1_descriptor(pool: Any) -> None:
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(v1_file_descriptor().SerializeToString())


def add_reflection(server: Any, service_names: tuple[str, ...]) -> None:
    """Serve reflection for ``service_names`` (plus reflection itself, both versions) on
    ``server`` (a ``grpc.aio.Server`` or anything with ``add_generic_rpc_handlers``)."""
    _register_v1_descriptor(descriptor_pool.Default())
    servicer = reflection.aio.ReflectionServicer((*service_names, *SERVICE_NAMES))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))
