"""What kube-apiserver checks of a CRD schema and of objects against it, for the chart tests (no API server can run here).

- structural_errors(): the structural-schema rules of apiextensions.k8s.io/v1
  (every node typed unless int-or-string / preserve-unknown-fields; no type,
  default, description or additionalProperties inside anyOf/allOf/oneOf/not;
  int-or-string only in its canonical anyOf form; properties and
  additionalProperties not both; metadata only restricts name/generateName;
  list-type map keys required or defaulted), plus what the CEL cost estimator
  needs to accept rules (bounded arrays, maps and rule-bearing strings).
- validate(): an object against openAPIV3Schema the way a strict `kubectl
  apply` meets it: defaults applied, then draft-07 JSON-schema validation (the
  python3-jsonschema package) with unknown fields rejected (the API server's
  strict field validation), then every x-kubernetes-validations rule run by
  cel.py. Returns a list of "path: message" strings.
"""

import copy

import jsonschema

import cel

VALUE_ONLY_FORBIDDEN = ("type", "default", "description", "additionalProperties", "nullable",
                        "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
                        "x-kubernetes-embedded-resource", "x-kubernetes-validations")
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def _children(node):
    """(path suffix, child schema) of every nested schema node that is not a junctor."""
    for name, sub in (node.get("properties") or {}).items():
        yield "." + name, sub
    if isinstance(node.get("additionalProperties"), dict):
        yield "[*]", node["additionalProperties"]
    if isinstance(node.get("items"), dict):
        yield "[]", node["items"]


def _junctor_errors(node, path):
    errs = []
    for j in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(node.get(j) or []):
            errs += _value_only(sub, "%s.%s[%d]" % (path, j, i))
    if "not" in node:
        errs += _value_only(node["not"], path + ".not")
    return errs


def _value_only(node, path):
    errs = ["%s: %s is not allowed inside a junctor" % (path, k) for k in VALUE_ONLY_FORBIDDEN if k in node]
    for suffix, sub in _children(node):
        errs += _value_only(sub, path + suffix)
    return errs + _junctor_errors(node, path)


def structural_errors(node, path="", cel_limits=True):
    errs = []
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in node and not (int_or_string or preserve):
        errs.append("%s: no type (needs type, x-kubernetes-int-or-string or x-kubernetes-preserve-unknown-fields)" % (path or "."))
    if int_or_string:
        if "type" in node:
            errs.append("%s: x-kubernetes-int-or-string with a type" % path)
        if node.get("anyOf") not in (None, INT_OR_STRING):
            errs.append("%s: x-kubernetes-int-or-string needs anyOf [integer, string]" % path)
    else:
        errs += _junctor_errors(node, path)
    if "properties" in node and "additionalProperties" in node:
        errs.append("%s: properties and additionalProperties together" % path)
    if isinstance(node.get("items"), list):
        errs.append("%s: items must be one schema" % path)
    if node.get("type") == "array" and "items" not in node:
        errs.append("%s: array without items" % path)
    if node.get("x-kubernetes-list-type") == "map":
        keys = node.get("x-kubernetes-list-map-keys") or []
        item = node.get("items") or {}
        if not keys:
            errs.append("%s: list-type map without list-map-keys" % path)
        for k in keys:
            if k not in (item.get("required") or []) and "default" not in (item.get("properties") or {}).get(k, {}):
                errs.append("%s: list-map key %s is neither required nor defaulted" % (path, k))
    if cel_limits:
        if node.get("type") == "array" and "maxItems" not in node:
            errs.append("%s: array without maxItems (unbounded CEL cost)" % path)
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            errs.append("%s: map without maxProperties (unbounded CEL cost)" % path)
        if node.get("type") == "string" and node.get("x-kubernetes-validations") and \
                "maxLength" not in node and "enum" not in node:
            errs.append("%s: string with CEL rules but no maxLength" % path)
    for rule in node.get("x-kubernetes-validations") or []:
        if "rule" not in rule:
            errs.append("%s: validation without rule" % path)
            continue
        try:
            cel.compile_rule(rule["rule"])
        except cel.CelError as e:
            errs.append("%s: rule %r: %s" % (path, rule["rule"], e))
    for suffix, sub in _children(node):
        if path == "" and suffix == ".metadata":
            allowed = {"name", "generateName"}
            extra = set((sub.get("properties") or {}).keys()) - allowed
            if extra or set(sub.keys()) - {"type", "properties"}:
                errs.append(".metadata: only type and name/generateName restrictions are allowed")
            continue
        errs += structural_errors(sub, path + suffix, cel_limits)
    return errs


def _strict(node):
    """A JSON schema that rejects unknown fields where the API server would prune or (strictly) refuse them."""
    node = copy.deepcopy(node)

    def walk(n, path):
        # An object without x-kubernetes-preserve-unknown-fields keeps only the
        # fields it declares (none, if it declares no properties); the root's
        # metadata is ObjectMeta, which the API server checks itself.
        if n.get("type") == "object" and "additionalProperties" not in n \
                and not n.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
            n["additionalProperties"] = False
        for suffix, sub in _children(n):
            walk(sub, path + suffix)
    walk(node, "")
    return node


def apply_defaults(node, value):
    """The API server's defaulting: a property with a default is filled in where its parent object exists."""
    if isinstance(value, dict):
        for name, sub in (node.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(sub, value[name])
        ap = node.get("additionalProperties")
        if isinstance(ap, dict):
            for k in value:
                apply_defaults(ap, value[k])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            apply_defaults(node["items"], item)
    return value


def cel_errors(node, value, path=""):
    errs = []
    for rule in node.get("x-kubernetes-validations") or []:
        try:
            ok = cel.evaluate(rule["rule"], value)
        except cel.CelError as e:
            errs.append("%s: rule %r failed to evaluate: %s" % (path or ".", rule["rule"], e))
            continue
        if not ok:
            errs.append("%s: %s" % (path + rule.get("fieldPath", "") or ".", rule.get("message") or "failed rule: " + rule["rule"]))
    if isinstance(value, dict):
        for name, sub in (node.get("properties") or {}).items():
            if name in value:
                errs += cel_errors(sub, value[name], path + "." + name)
        ap = node.get("additionalProperties")
        if isinstance(ap, dict):
            for k, v in value.items():
                errs += cel_errors(ap, v, "%s[%s]" % (path, k))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            errs += cel_errors(node["items"], item, "%s[%d]" % (path, i))
    return errs


def _list_map_errors(node, value, path=""):
    """x-kubernetes-list-type: map means the keys are unique (the API server refuses duplicates)."""
    errs = []
    if isinstance(value, list):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            seen = set()
            for item in value:
                if isinstance(item, dict):
                    k = tuple(item.get(x) for x in keys)
                    if k in seen:
                        errs.append("%s: duplicate entry %s" % (path, dict(zip(keys, k))))
                    seen.add(k)
        if isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                errs += _list_map_errors(node["items"], item, "%s[%d]" % (path, i))
    elif isinstance(value, dict):
        for name, sub in (node.get("properties") or {}).items():
            if name in value:
                errs += _list_map_errors(sub, value[name], path + "." + name)
    return errs


def validate(schema, obj):
    obj = apply_defaults(schema, copy.deepcopy(obj))
    errs = []
    validator = jsonschema.Draft7Validator(_strict(schema))
    for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        errs.append("%s: %s" % ("." + ".".join(str(p) for p in e.absolute_path), e.message))
    errs += _list_map_errors(schema, obj)
    if not errs:
        # CEL runs only on objects that passed the schema, as in the API server.
        errs += cel_errors(schema, obj)
    return errs
