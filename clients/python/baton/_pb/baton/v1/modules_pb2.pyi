from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeployRequest(_message.Message):
    __slots__ = ("name", "component")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    component: bytes
    def __init__(self, name: _Optional[str] = ..., component: _Optional[bytes] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("hash", "version")
    HASH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    hash: str
    version: int
    def __init__(self, hash: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("modules",)
    MODULES_FIELD_NUMBER: _ClassVar[int]
    modules: _containers.RepeatedCompositeFieldContainer[ModuleInfo]
    def __init__(self, modules: _Optional[_Iterable[_Union[ModuleInfo, _Mapping]]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModuleInfo(_message.Message):
    __slots__ = ("name", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[ModuleVersion]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[ModuleVersion, _Mapping]]] = ...) -> None: ...

class ModuleVersion(_message.Message):
    __slots__ = ("version", "hash", "size_bytes", "exports", "builtin", "builtin_set", "functions", "declares_functions")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_SET_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    DECLARES_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    version: int
    hash: str
    size_bytes: int
    exports: _containers.RepeatedScalarFieldContainer[str]
    builtin: bool
    builtin_set: int
    functions: _containers.RepeatedCompositeFieldContainer[ModuleFunction]
    declares_functions: bool
    def __init__(self, version: _Optional[int] = ..., hash: _Optional[str] = ..., size_bytes: _Optional[int] = ..., exports: _Optional[_Iterable[str]] = ..., builtin: _Optional[bool] = ..., builtin_set: _Optional[int] = ..., functions: _Optional[_Iterable[_Union[ModuleFunction, _Mapping]]] = ..., declares_functions: _Optional[bool] = ...) -> None: ...

class ModuleFunction(_message.Message):
    __slots__ = ("name", "writes", "waits", "summary", "input", "input_example", "output_example")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    WAITS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    writes: bool
    waits: bool
    summary: str
    input: str
    input_example: str
    output_example: str
    def __init__(self, name: _Optional[str] = ..., writes: _Optional[bool] = ..., waits: _Optional[bool] = ..., summary: _Optional[str] = ..., input: _Optional[str] = ..., input_example: _Optional[str] = ..., output_example: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: int
    def __init__(self, versions: _Optional[int] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("name", "hash", "function", "input", "lease", "fuel", "read_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    FUEL_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    hash: str
    function: str
    input: bytes
    lease: int
    fuel: int
    read_only: bool
    def __init__(self, name: _Optional[str] = ..., hash: _Optional[str] = ..., function: _Optional[str] = ..., input: _Optional[bytes] = ..., lease: _Optional[int] = ..., fuel: _Optional[int] = ..., read_only: _Optional[bool] = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("output", "revision", "fuel_used", "runs")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    FUEL_USED_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    output: bytes
    revision: int
    fuel_used: int
    runs: int
    def __init__(self, output: _Optional[bytes] = ..., revision: _Optional[int] = ..., fuel_used: _Optional[int] = ..., runs: _Optional[int] = ...) -> None: ...
