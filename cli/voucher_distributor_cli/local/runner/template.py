"""Read a SAM template and resolve its intrinsic functions, without CloudFormation.

The local runner builds its resources from ``template.yaml`` itself so that what runs locally is
what deploys: names, queue settings, redrive policies and environment variables all come from one
place. This module knows the template *language* (short-form tags, ``Ref``/``Fn::*``, conditions,
parameters, pseudo parameters, ``Globals``); it knows nothing about AWS services. Physical values
of resources (a queue's URL, a table's ARN) are supplied by whoever creates them, through
:class:`PhysicalValues`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_REGION",
    "FunctionSpec",
    "PhysicalValues",
    "Resolver",
    "SamTemplate",
    "SqsEventSpec",
    "TemplateError",
    "TemplateResource",
    "UnresolvedReferenceError",
    "env_value",
    "load_yaml",
    "references",
]

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's default account: ARNs it returns use it too
DEFAULT_REGION = "us-east-1"

# A value the resolver removes from its parent (CloudFormation's AWS::NoValue).
_NO_VALUE: Any = object()


class TemplateError(ValueError):
    """The template (or a parameter given for it) cannot be used as written."""


class UnresolvedReferenceError(TemplateError):
    """An intrinsic names a resource whose physical value is not known (yet)."""

    def __init__(self, logical_id: str, attribute: str | None = None) -> None:
        self.logical_id = logical_id
        self.attribute = attribute
        what = f"{logical_id}.{attribute}" if attribute else logical_id
        super().__init__(f"no physical value for {what}")


# ------------------------------------------------------------------------------------ loading


class _SamLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short-form tags into their long form."""


def _construct_node(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


def _tag_constructor(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    """``!Ref x`` → ``{"Ref": x}``, ``!GetAtt A.B`` → ``{"Fn::GetAtt": [A, B]}``, ``!X`` → Fn::X."""
    value = _construct_node(loader, node)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        logical_id, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [logical_id, attribute]}
    return {f"Fn::{tag_suffix}": value}


_SamLoader.add_multi_constructor("!", _tag_constructor)


def load_yaml(text: str) -> Any:
    """Parse CloudFormation YAML; unknown short-form tags are kept as ``{"Fn::<Tag>": value}``."""
    return yaml.load(text, Loader=_SamLoader)  # noqa: S506 - a SafeLoader subclass


# ------------------------------------------------------------------------------------ helpers


def references(value: Any) -> set[str]:
    """Logical ids (resources, parameters or pseudo parameters) an expression refers to.

    Used to order resource creation: a queue naming its DLQ's ARN must come after the DLQ.
    """
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and isinstance(arg, str):
                return {arg}
            if key == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) and arg else str(arg).partition(".")[0]
                if isinstance(target, str):
                    return {target}
            if key == "Fn::Sub":
                text, variables = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})
                names = {
                    name.partition(".")[0]
                    for name in _SUB_VARIABLE.findall(text if isinstance(text, str) else "")
                    if not name.startswith("!") and name not in variables
                }
                return names | references(variables)
        for item in value.values():
            found |= references(item)
    return found


def env_value(value: Any) -> str:
    """Render a resolved template value the way Lambda stores an environment variable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


# ------------------------------------------------------------------------------------ resolver


class PhysicalValues(Protocol):
    """What a resource-creating backend tells the resolver about the resources it made."""

    def ref(self, logical_id: str) -> str | None:
        """The resource's ``Ref`` value, or None if it does not exist (yet)."""

    def get_att(self, logical_id: str, attribute: str) -> str | None:
        """The resource's ``Fn::GetAtt`` attribute, or None if unknown (yet)."""


class Resolver:
    """Evaluates intrinsic functions against parameters, pseudo parameters and resources.

    Anything that cannot be resolved raises :class:`UnresolvedReferenceError` (missing resources)
    or :class:`TemplateError` (malformed intrinsics), never silently yields a placeholder: a
    wrong queue URL in an environment variable would otherwise surface much later as a confusing
    runtime error in a handler.
    """

    def __init__(
        self,
        *,
        parameters: Mapping[str, Any],
        pseudo: Mapping[str, Any],
        physical: PhysicalValues | None = None,
        conditions: Mapping[str, Any] | None = None,
        mappings: Mapping[str, Any] | None = None,
        imports: Mapping[str, str] | None = None,
    ) -> None:
        self.parameters = dict(parameters)
        self.pseudo = dict(pseudo)
        self.physical = physical
        self._condition_exprs = dict(conditions or {})
        self._condition_values: dict[str, bool] = {}
        self.mappings = dict(mappings or {})
        self.imports = dict(imports or {})
        self._functions: dict[str, Callable[[Any], Any]] = {
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::Equals": self._equals,
            "Fn::Not": self._not,
            "Fn::And": self._and,
            "Fn::Or": self._or,
            "Fn::FindInMap": self._find_in_map,
            "Fn::ImportValue": self._import_value,
            "Fn::Base64": self._base64,
            "Fn::GetAZs": self._get_azs,
        }

    # -- public

    def resolve(self, value: Any) -> Any:
        """The value with every intrinsic evaluated (``AWS::NoValue`` entries dropped)."""
        result = self._resolve(value)
        return None if result is _NO_VALUE else result

    def condition(self, name: str) -> bool:
        """Evaluate a named condition from the template's ``Conditions`` section."""
        if name not in self._condition_values:
            if name not in self._condition_exprs:
                raise TemplateError(f"unknown condition {name!r}")
            self._condition_values[name] = bool(self._resolve(self._condition_exprs[name]))
        return self._condition_values[name]

    def ref(self, name: str) -> Any:
        """``Ref``: a parameter, a pseudo parameter or a resource's physical id."""
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        value = self.physical.ref(name) if self.physical is not None else None
        if value is None:
            raise UnresolvedReferenceError(name)
        return value

    def get_att(self, logical_id: str, attribute: str) -> str:
        """``Fn::GetAtt`` of a resource."""
        value = self.physical.get_att(logical_id, attribute) if self.physical else None
        if value is None:
            raise UnresolvedReferenceError(logical_id, attribute)
        return value

    # -- recursion

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self._resolve(item) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(self._resolve(arg)))
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key in self._functions:
                return self._functions[key](arg)
        resolved = {key: self._resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    # -- functions

    def _get_att(self, arg: Any) -> str:
        if isinstance(arg, str):
            logical_id, _, attribute = arg.partition(".")
        elif isinstance(arg, list) and len(arg) == 2:
            logical_id, attribute = str(arg[0]), str(self._resolve(arg[1]))
        else:
            raise TemplateError(f"Fn::GetAtt needs [LogicalId, Attribute], got {arg!r}")
        return self.get_att(logical_id, attribute)

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list) and len(arg) == 2:
            text, variables = arg[0], self._resolve(arg[1])
        elif isinstance(arg, str):
            text, variables = arg, {}
        else:
            raise TemplateError(f"Fn::Sub needs a string or [string, {{vars}}], got {arg!r}")
        if not isinstance(text, str) or not isinstance(variables, dict):
            raise TemplateError(f"Fn::Sub needs a string or [string, {{vars}}], got {arg!r}")

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return env_value(variables[name])
            if name in self.pseudo or name in self.parameters or "." not in name:
                value = self.ref(name)
                if isinstance(value, list):  # a CommaDelimitedList parameter
                    return ",".join(str(item) for item in value)
                return env_value(value)
            logical_id, _, attribute = name.partition(".")
            return self.get_att(logical_id, attribute)

        return _SUB_VARIABLE.sub(substitute, text)

    def _join(self, arg: Any) -> str:
        if not (isinstance(arg, list) and len(arg) == 2):
            raise TemplateError(f"Fn::Join needs [delimiter, [values]], got {arg!r}")
        delimiter, items = str(arg[0]), self._resolve(arg[1])
        if not isinstance(items, list):
            raise TemplateError(f"Fn::Join values must be a list, got {items!r}")
        return delimiter.join(env_value(item) for item in items)

    def _select(self, arg: Any) -> Any:
        if not (isinstance(arg, list) and len(arg) == 2):
            raise TemplateError(f"Fn::Select needs [index, [values]], got {arg!r}")
        index, items = int(self._resolve(arg[0])), self._resolve(arg[1])
        if not isinstance(items, list) or not 0 <= index < len(items):
            raise TemplateError(f"Fn::Select index {index} out of range for {items!r}")
        return items[index]

    def _split(self, arg: Any) -> list[str]:
        if not (isinstance(arg, list) and len(arg) == 2):
            raise TemplateError(f"Fn::Split needs [delimiter, string], got {arg!r}")
        return str(self._resolve(arg[1])).split(str(arg[0]))

    def _if(self, arg: Any) -> Any:
        if not (isinstance(arg, list) and len(arg) == 3):
            raise TemplateError(f"Fn::If needs [condition, then, else], got {arg!r}")
        return self._resolve(arg[1] if self.condition(str(arg[0])) else arg[2])

    def _equals(self, arg: Any) -> bool:
        if not (isinstance(arg, list) and len(arg) == 2):
            raise TemplateError(f"Fn::Equals needs [a, b], got {arg!r}")
        left, right = (self._resolve(item) for item in arg)
        return env_value(left) == env_value(right)

    def _not(self, arg: Any) -> bool:
        items = arg if isinstance(arg, list) else [arg]
        if len(items) != 1:
            raise TemplateError(f"Fn::Not needs [condition], got {arg!r}")
        return not bool(self._resolve(items[0]))

    def _and(self, arg: Any) -> bool:
        return all(bool(self._resolve(item)) for item in _as_list(arg, "Fn::And"))

    def _or(self, arg: Any) -> bool:
        return any(bool(self._resolve(item)) for item in _as_list(arg, "Fn::Or"))

    def _find_in_map(self, arg: Any) -> Any:
        if not (isinstance(arg, list) and len(arg) in (3, 4)):
            raise TemplateError(f"Fn::FindInMap needs [map, key, key], got {arg!r}")
        name, top, second = (str(self._resolve(item)) for item in arg[:3])
        try:
            return self.mappings[name][top][second]
        except (KeyError, TypeError):
            if len(arg) == 4 and isinstance(arg[3], dict) and "DefaultValue" in arg[3]:
                return self._resolve(arg[3]["DefaultValue"])
            raise TemplateError(f"Fn::FindInMap: no {name}.{top}.{second}") from None

    def _import_value(self, arg: Any) -> str:
        name = str(self._resolve(arg))
        if name not in self.imports:
            raise TemplateError(f"Fn::ImportValue {name!r}: pass it in imports={{...}}")
        return self.imports[name]

    def _base64(self, arg: Any) -> str:
        return base64.b64encode(env_value(self._resolve(arg)).encode()).decode()

    def _get_azs(self, arg: Any) -> list[str]:
        region = str(self._resolve(arg)) or str(self.pseudo["AWS::Region"])
        return [f"{region}{zone}" for zone in "abc"]


def _as_list(arg: Any, name: str) -> list[Any]:
    if not isinstance(arg, list):
        raise TemplateError(f"{name} needs a list, got {arg!r}")
    return arg


# ------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class TemplateResource:
    """One entry of ``Resources``, unresolved."""

    logical_id: str
    type: str
    properties: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    condition: str | None = None

    def dependencies(self, known: Iterable[str]) -> set[str]:
        """Other resources (among ``known``) this one must be created after."""
        names = set(known)
        return (references(self.properties) | set(self.depends_on)) & names - {self.logical_id}


@dataclass(frozen=True)
class SqsEventSpec:
    """An ``Events`` entry of ``Type: SQS`` on a serverless function (Queue is unresolved)."""

    name: str
    queue: Any
    batch_size: int = 10
    function_response_types: tuple[str, ...] = ()
    maximum_batching_window_s: int = 0
    enabled: bool = True

    @property
    def reports_batch_item_failures(self) -> bool:
        """Whether a ``batchItemFailures`` response is honoured (else it is ignored)."""
        return "ReportBatchItemFailures" in self.function_response_types


@dataclass(frozen=True)
class FunctionSpec:
    """An ``AWS::Serverless::Function`` with ``Globals.Function`` applied.

    ``environment`` values are unresolved template expressions: they usually name resources
    whose physical values only exist once a stack has created them.
    """

    logical_id: str
    code_uri: Path
    handler: str
    runtime: str | None
    timeout_s: int
    memory_mb: int
    function_name: str | None
    environment: dict[str, Any] = field(default_factory=dict)
    sqs_events: tuple[SqsEventSpec, ...] = ()
    other_events: dict[str, str] = field(default_factory=dict)

    @property
    def module_name(self) -> str:
        """The handler's module, e.g. ``app`` for ``app.handler``."""
        return self.handler.rpartition(".")[0]

    @property
    def attribute(self) -> str:
        """The handler's function name, e.g. ``handler`` for ``app.handler``."""
        return self.handler.rpartition(".")[2]


_SAM_DEFAULT_TIMEOUT_S = 3
_SAM_DEFAULT_MEMORY_MB = 128


class SamTemplate:
    """A parsed SAM template: parameters, conditions, resources, Globals and functions."""

    def __init__(self, document: Mapping[str, Any], base_dir: Path) -> None:
        if not isinstance(document, Mapping) or not isinstance(document.get("Resources"), dict):
            raise TemplateError("not a CloudFormation template: no Resources mapping")
        self.document = dict(document)
        self.base_dir = base_dir

    @classmethod
    def load(cls, path: str | Path) -> SamTemplate:
        """Read a template file; relative ``CodeUri``s resolve against its directory."""
        file = Path(path).resolve()
        return cls(load_yaml(file.read_text(encoding="utf-8")), file.parent)

    # -- sections

    @property
    def parameter_declarations(self) -> dict[str, dict[str, Any]]:
        """The ``Parameters`` section as written."""
        return dict(self.document.get("Parameters") or {})

    @property
    def conditions(self) -> dict[str, Any]:
        """The ``Conditions`` section as written."""
        return dict(self.document.get("Conditions") or {})

    @property
    def mappings(self) -> dict[str, Any]:
        """The ``Mappings`` section as written."""
        return dict(self.document.get("Mappings") or {})

    @property
    def globals_function(self) -> dict[str, Any]:
        """``Globals.Function`` as written (unresolved)."""
        return dict((self.document.get("Globals") or {}).get("Function") or {})

    @property
    def resources(self) -> dict[str, TemplateResource]:
        """Every resource, unresolved, in template order."""
        result: dict[str, TemplateResource] = {}
        for logical_id, body in self.document["Resources"].items():
            if not isinstance(body, dict) or "Type" not in body:
                raise TemplateError(f"resource {logical_id} has no Type")
            depends = body.get("DependsOn") or ()
            result[logical_id] = TemplateResource(
                logical_id=logical_id,
                type=str(body["Type"]),
                properties=dict(body.get("Properties") or {}),
                depends_on=(depends,) if isinstance(depends, str) else tuple(depends),
                condition=body.get("Condition"),
            )
        return result

    def parameters(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Parameter values: template defaults with ``overrides`` applied and checked.

        Values are strings (``Number`` too, as ``Ref`` yields them in CloudFormation) except
        ``CommaDelimitedList``/``List<...>`` parameters, which are lists.
        """
        declared = self.parameter_declarations
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"unknown parameter(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        missing: list[str] = []
        for name, declaration in declared.items():
            spec = declaration or {}
            if name in overrides:
                raw = overrides[name]
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                missing.append(name)
                continue
            kind = str(spec.get("Type", "String"))
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                value: Any = (
                    [str(item) for item in raw]
                    if isinstance(raw, list)
                    else [item.strip() for item in str(raw).split(",")]
                )
            else:
                value = env_value(raw)
            allowed = spec.get("AllowedValues")
            if allowed is not None and value not in [env_value(item) for item in allowed]:
                raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
            values[name] = value
        if missing:
            raise TemplateError(f"parameter(s) without a default need a value: {missing}")
        return values

    def resolver(
        self,
        *,
        parameters: Mapping[str, Any] | None = None,
        stack_name: str = "local",
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
        physical: PhysicalValues | None = None,
        imports: Mapping[str, str] | None = None,
    ) -> Resolver:
        """A resolver for this template with parameter defaults and pseudo parameters set."""
        pseudo = {
            "AWS::AccountId": account_id,
            "AWS::Region": region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack_name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/"
                "00000000-0000-0000-0000-000000000000"
            ),
            "AWS::NotificationARNs": [],
        }
        return Resolver(
            parameters=self.parameters(parameters),
            pseudo=pseudo,
            physical=physical,
            conditions=self.conditions,
            mappings=self.mappings,
            imports=imports,
        )

    # -- functions

    def functions(self, resolver: Resolver | None = None) -> dict[str, FunctionSpec]:
        """Every ``AWS::Serverless::Function`` with Globals merged.

        ``resolver`` (parameters only are needed) evaluates settings such as ``Timeout`` that a
        template may take from a parameter; environment values and event queues stay unresolved.
        """
        resolver = resolver or self.resolver()
        glob = self.globals_function
        result: dict[str, FunctionSpec] = {}
        for logical_id, resource in self.resources.items():
            if resource.type != "AWS::Serverless::Function":
                continue
            props = resource.properties

            def setting(name: str, default: Any, props: dict[str, Any] = props) -> Any:
                return resolver.resolve(props.get(name, glob.get(name, default)))

            env: dict[str, Any] = {}
            for source in (glob, props):
                env.update(((source.get("Environment") or {}).get("Variables")) or {})
            sqs_events: list[SqsEventSpec] = []
            other_events: dict[str, str] = {}
            for event_name, event in (props.get("Events") or {}).items():
                event_type = str(event.get("Type"))
                if event_type != "SQS":
                    other_events[event_name] = event_type
                    continue
                ep = event.get("Properties") or {}
                sqs_events.append(
                    SqsEventSpec(
                        name=event_name,
                        queue=ep.get("Queue"),
                        batch_size=int(resolver.resolve(ep.get("BatchSize", 10))),
                        function_response_types=tuple(
                            resolver.resolve(ep.get("FunctionResponseTypes") or [])
                        ),
                        maximum_batching_window_s=int(
                            resolver.resolve(ep.get("MaximumBatchingWindowInSeconds", 0))
                        ),
                        enabled=env_value(resolver.resolve(ep.get("Enabled", True))) == "true",
                    )
                )
            code_uri = setting("CodeUri", ".")
            if not isinstance(code_uri, str):
                raise TemplateError(f"{logical_id}: only a local CodeUri path is supported")
            handler = setting("Handler", None)
            if not isinstance(handler, str) or "." not in handler:
                raise TemplateError(f"{logical_id}: Handler must look like module.function")
            name = props.get("FunctionName")
            result[logical_id] = FunctionSpec(
                logical_id=logical_id,
                code_uri=(self.base_dir / code_uri).resolve(),
                handler=handler,
                runtime=setting("Runtime", None),
                timeout_s=int(setting("Timeout", _SAM_DEFAULT_TIMEOUT_S)),
                memory_mb=int(setting("MemorySize", _SAM_DEFAULT_MEMORY_MB)),
                function_name=None if name is None else str(resolver.resolve(name)),
                environment=env,
                sqs_events=tuple(sqs_events),
                other_events=other_events,
            )
        return result
