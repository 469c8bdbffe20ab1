#!/usr/bin/env python3
"""A small fake of the Kubernetes API server for Hangar's integration tests (Python 3.11 stdlib only).

    python3 kube_api.py --port 0 [--crd FILE]...

Serves plain HTTP on 127.0.0.1; its first stdout line is `listening on 127.0.0.1:PORT`, logs go to stderr,
SIGTERM ends it. `--crd` (repeatable) installs CustomResourceDefinitions from a JSON file (one object, an
array or a `kind: List`); YAML files are read only when PyYAML is importable.

It serves what a kube-rs `Client` and kube-runtime's `watcher` use for custom resources: CRDs at
/apis/apiextensions.k8s.io/v1/customresourcedefinitions[/NAME[/status]]; for every installed CRD (group,
served version, plural) /apis/G/V/namespaces/NS/PLURAL[/NAME[/status]] and /apis/G/V/PLURAL (all namespaces,
or cluster-scoped CRDs); anything else is a 404 Status. Verbs: list (labelSelector, fieldSelector on
metadata.name/namespace, limit/continue), watch (resourceVersion, sendInitialEvents, allowWatchBookmarks,
timeoutSeconds; chunked, one JSON event a line), create (generateName), get, replace (resourceVersion required,
409 Conflict when stale), patch (merge-patch+json, json-patch+json, apply-patch+yaml), delete (finalizers and
preconditions honoured), deletecollection and the status subresource. Errors are `Status` objects. One global
resourceVersion counts every write; writes that change nothing are no-ops, as on the real server (no new
resourceVersion, no event). Also GET /version and /api.

Test-control endpoints:
  POST /_fake/delete-pod?namespace=NS&name=POD  delete the custom resources in NS with an ownerReference
                                                {kind: Pod, name: POD}, as the garbage collector -> {"deleted":[..]}
  POST /_fake/break-watches  end every open watch without the last chunk -> {"closed":N}
  POST /_fake/compact        advance the resourceVersion by one (as writes elsewhere in a real cluster do),
                             forget the history up to there and break every watch: resuming from any earlier
                             resourceVersion gets the 410 Expired ERROR event -> {"compacted":RV}
  GET  /_fake/stats          {"lists","watches","watches_open","expired_410","by_resource":{PLURAL.GROUP:{..}}}

What a real API server does differently:
- Schemas: only unknown-field pruning, null pruning, `default`s and `required` (422 Invalid) are applied; no
  type, format, enum, pattern or CEL checks, no conversion between versions (an object is stored once and
  answered in the requested version). CRDs are established at once; only their name, group, names, scope and
  single storage version are checked.
- No authentication, RBAC, admission, namespaces (every namespace exists), managedFields, dryRun, protobuf,
  HTTP/2, table output, /apis discovery, label syntax validation or `Status` for successful deletes (the
  object is returned). Request bodies must be JSON (apply-patch+yaml too, as kube-rs sends it) with a
  Content-Length.
- Server-side apply merges the applied object into the stored one (maps recursively, lists whole) and drops
  the fields this fieldManager applied before and no longer sends; there are no conflicts between managers.
- Lists always honour `limit` (the real server ignores it for resourceVersion=0); resourceVersion and
  resourceVersionMatch are ignored; continue tokens are snapshots that never expire.
- Watches get a BOOKMARK every second when allowed; a resourceVersion newer than the current one just waits.
  Deleting a CRD deletes its objects at once (ignoring their finalizers) without ending watches on them.
  Garbage collection happens only through /_fake/delete-pod.
"""
import argparse, base64, bisect, copy, json, random, re, signal, socketserver, sys, threading, time, traceback, uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    import yaml
except ImportError:
    yaml = None

CRD_GROUP, CRD_PLURAL = 'apiextensions.k8s.io', 'customresourcedefinitions'
CRD_KEY = (CRD_GROUP, CRD_PLURAL)
APPLY, MERGE, JSONPATCH = 'application/apply-patch+yaml', 'application/merge-patch+json', 'application/json-patch+json'
VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "60a317eadfcb839692a68eab88b2096f4d708f4f",
           "gitTreeState": "clean", "buildDate": "2025-04-23T13:07:04Z", "goVersion": "go1.24.2", "compiler": "gc",
           "platform": "linux/amd64"}

# All state, guarded by LOCK, which is also the condition open watches wait on.
LOCK = threading.Condition()
OBJS = {}      # (group, plural) -> {(namespace or '', name): object without apiVersion/kind}; stored objects never change
HISTORY = []   # (rv, type, (group, plural), object, previous object for MODIFIED), rv ascending
APPLIED = {}   # ((group, plural), ns, name, fieldManager) -> the object that manager last applied
SNAPS = {}     # continue-token id -> (rv, items)
RV, COMPACTED, EPOCH = 1, 0, 0
STATS = {"lists": 0, "watches": 0, "watches_open": 0, "expired_410": 0, "by_resource": {}}

class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

def status_obj(code, reason, message, details=None):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, **({"details": details} if details else {}), "code": code}

def no_path():
    return ApiError(404, 'NotFound', 'the server could not find the requested resource', {})

def bad(message):
    return ApiError(400, 'BadRequest', message)

def now():
    return datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')

class RType:
    """A resource as one request sees it: the CRD resource itself or a custom resource in one version."""
    def __init__(self, group, version, plural, kind, namespaced, status_sub, schema=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.status_sub, self.schema = namespaced, status_sub, schema
        self.key, self.api_version, self.gr = (group, plural), f'{group}/{version}', f'{plural}.{group}'

    def details(self, name):
        return {"name": name, "group": self.group, "kind": self.plural}

    def not_found(self, name):
        return ApiError(404, 'NotFound', f'{self.gr} "{name}" not found', self.details(name))

    def invalid(self, name, causes):  # causes: [(field, message)]
        msg = ', '.join(f'{f}: {m}' for f, m in causes)
        return ApiError(422, 'Invalid', f'{self.kind}.{self.group} "{name}" is invalid: ' + (f'[{msg}]' if len(causes) > 1
                        else msg), {"name": name, "group": self.group, "kind": self.kind, "causes": [
                            {"reason": "FieldValueRequired" if m == 'Required value' else "FieldValueInvalid",
                             "message": m, "field": f} for f, m in causes]})

    def out(self, obj):
        return {"apiVersion": self.api_version, "kind": self.kind, **obj}

CRD_RT = RType(CRD_GROUP, 'v1', CRD_PLURAL, 'CustomResourceDefinition', False, True)

def resolve(group, version, plural):
    if (group, version, plural) == (CRD_GROUP, 'v1', CRD_PLURAL):
        return CRD_RT
    for crd in OBJS.get(CRD_KEY, {}).values():
        s = crd['spec']
        for v in s['versions'] if (s['group'], s['names']['plural']) == (group, plural) else []:
            if v['name'] == version and v.get('served', True):
                return RType(group, version, plural, s['names']['kind'], s['scope'] == 'Namespaced', 'status' in
                             (v.get('subresources') or {}), (v.get('schema') or {}).get('openAPIV3Schema'))

# ---- what the server does to every object it stores ----------------------------------------------------------

def prune(v, s, top=False):
    """Drop unknown fields and nulls that are not nullable; fill in defaults (structural schema semantics)."""
    if isinstance(v, dict):
        top, props, addl = top or s.get('x-kubernetes-embedded-resource'), s.get('properties') or {}, s.get('additionalProperties')
        for k, sub in props.items():
            if k in v and v[k] is None and not sub.get('nullable'):
                del v[k]
            if k not in v and 'default' in sub:
                v[k] = copy.deepcopy(sub['default'])
        for k in list(v):
            if top and k in ('apiVersion', 'kind', 'metadata'):
                continue
            if k in props or isinstance(addl, dict):
                prune(v[k], props.get(k, addl))
            elif not (addl is True or s.get('x-kubernetes-preserve-unknown-fields')):
                del v[k]
    elif isinstance(v, list) and isinstance(s.get('items'), dict):
        for x in v:
            prune(x, s['items'])

def missing_required(v, s, path=''):
    if isinstance(v, list) and isinstance(s.get('items'), dict):
        return [m for i, x in enumerate(v) for m in missing_required(x, s['items'], f'{path[:-1]}[{i}].')]
    if not isinstance(v, dict):
        return []
    return [path + k for k in s.get('required') or [] if k not in v] + [
        m for k, sub in (s.get('properties') or {}).items() if k in v for m in missing_required(v[k], sub, f'{path}{k}.')]

def check_crd(obj):
    md, s = obj['metadata'], obj.get('spec') or {}
    names = s.get('names') or {}
    errs = [(f, 'Required value') for f, ok in (('spec.group', s.get('group')), ('spec.names.plural', names.get('plural')),
            ('spec.names.kind', names.get('kind')), ('spec.versions', s.get('versions'))) if not ok]
    if s.get('scope') not in ('Namespaced', 'Cluster'):
        errs.append(('spec.scope', f'Unsupported value: "{s.get("scope")}": supported values: "Cluster", "Namespaced"'))
    if not errs and md['name'] != f"{names['plural']}.{s['group']}":
        errs.append(('metadata.name', f'Invalid value: "{md["name"]}": must be spec.names.plural+"."+spec.group'))
    storage = [v.get('name') for v in s.get('versions') or [] if v.get('storage')]
    if not errs and len(storage) != 1:
        errs.append(('spec.versions', 'Invalid value: must have exactly one version marked as storage version'))
    if errs:
        raise CRD_RT.invalid(md['name'], errs)
    cond = lambda t, r, m: {"type": t, "status": "True", "lastTransitionTime": md['creationTimestamp'], "reason": r, "message": m}
    obj['status'] = {"conditions": [cond('NamesAccepted', 'NoConflicts', 'no conflicts found'),
                                    cond('Established', 'InitialNamesAccepted', 'the initial names have been accepted')],
                     "acceptedNames": dict(names, singular=names.get('singular') or names['kind'].lower(),
                                           listKind=names.get('listKind') or names['kind'] + 'List'),
                     "storedVersions": storage}

def prepare(rt, obj):
    if rt is CRD_RT:
        return check_crd(obj)
    if rt.schema:
        prune(obj, rt.schema, top=True)
        if missing := missing_required(obj, rt.schema):
            raise rt.invalid(obj['metadata']['name'], [(f, 'Required value') for f in missing])

# ---- selectors -------------------------------------------------------------------------------------------------

KEY, VAL = r'[A-Za-z0-9][-A-Za-z0-9_./]*', r'[-A-Za-z0-9_.]*'

def parse_labels(s):
    preds = []
    for t in filter(None, (t.strip() for t in re.split(r',(?![^()]*\))', s))):
        if m := re.fullmatch(rf'({KEY})\s+(in|notin)\s+\(([^)]*)\)', t):
            preds.append(lambda L, k=m[1], vs={v.strip() for v in m[3].split(',')}, neg=m[2] == 'notin': (L.get(k) in vs) != neg)
        elif m := re.fullmatch(rf'!\s*({KEY})', t):
            preds.append(lambda L, k=m[1]: k not in L)
        elif m := re.fullmatch(rf'({KEY})\s*(==|!=|=)\s*({VAL})', t):
            preds.append(lambda L, k=m[1], v=m[3], neg=m[2] == '!=': (L.get(k) == v) != neg)
        elif re.fullmatch(KEY, t):
            preds.append(lambda L, k=t: k in L)
        else:
            raise bad(f'unable to parse requirement: {t!r}')
    return preds

def parse_fields(s):
    preds = []
    for t in filter(None, (t.strip() for t in s.split(','))):
        if not (m := re.fullmatch(r'([\w.]+)\s*(==|!=|=)\s*(.*)', t)):
            raise bad(f'invalid selector: {s!r}')
        if m[1] not in ('metadata.name', 'metadata.namespace'):
            raise bad(f'"{m[1]}" is not a known field selector: only "metadata.name", "metadata.namespace"')
        preds.append(lambda md, f=m[1][9:], v=m[3], neg=m[2] == '!=': (md.get(f, '') == v) != neg)
    return preds

class Filter:
    def __init__(self, ns, q):
        self.ns, self.labels, self.fields = ns, parse_labels(q.get('labelSelector', '')), parse_fields(q.get('fieldSelector', ''))

    def __call__(self, obj):
        md = obj['metadata']
        return ((self.ns is None or md.get('namespace', '') == self.ns) and all(p(md) for p in self.fields)
                and all(p(md.get('labels') or {}) for p in self.labels))

    def current(self, rt):
        return [o for _, o in sorted(OBJS.get(rt.key, {}).items()) if self(o)]

# ---- writes (the caller holds LOCK) ----------------------------------------------------------------------------

def commit(key, obj, etype, old=None):
    """Store obj (or drop it, for DELETED) at the next resourceVersion and record the event."""
    global RV
    RV += 1
    md = obj['metadata']
    md['resourceVersion'], at = str(RV), (md.get('namespace', ''), md['name'])
    if etype == 'DELETED':
        del OBJS[key][at]
        for k in [k for k in APPLIED if k[:3] == (key, *at)]:
            del APPLIED[k]
    else:
        OBJS.setdefault(key, {})[at] = obj
    HISTORY.append((RV, etype, key, obj, old))
    LOCK.notify_all()
    if etype == 'DELETED' and key == CRD_KEY:  # a CRD takes its objects with it
        ckey = (obj['spec']['group'], obj['spec']['names']['plural'])
        for o in list(OBJS.get(ckey, {}).values()):
            commit(ckey, copy.deepcopy(o), 'DELETED')
    return obj

def check_body(rt, ns, body, name=None, apply=False):
    """A client's object checked against the URL, as a private copy without apiVersion and kind."""
    if not isinstance(body, dict) or not isinstance(body.get('metadata', {}), dict):
        raise bad('the body of the request was in an unknown format')
    obj = copy.deepcopy(body)
    av, kind = obj.pop('apiVersion', None), obj.pop('kind', None)
    if not av or not kind:
        raise bad(f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
    if apply and av != rt.api_version:
        raise bad(f'Incorrect version specified in apply patch. Specified patch version: {av}, expected: {rt.api_version}')
    if av.rpartition('/')[0] != rt.group or kind != rt.kind:
        raise bad(f'{av}, Kind={kind} does not match the expected {rt.api_version}, Kind={rt.kind}')
    md = obj.setdefault('metadata', {})
    if ns and md.get('namespace') not in (None, '', ns):
        raise bad('the namespace of the provided object does not match the namespace sent on the request')
    if name is not None and md.get('name') != name:
        raise bad(f'the name of the object ({md.get("name")}) does not match the name on the URL ({name})')
    md.pop('managedFields', None)
    return obj

def create(rt, ns, obj):
    md = obj['metadata']
    if not md.get('name'):
        if not md.get('generateName'):
            raise rt.invalid('', [('metadata.name', 'Required value: name or generateName is required')])
        md['name'] = md['generateName'] + ''.join(random.choices('bcdfghjklmnpqrstvwxz2456789', k=5))
    if (ns or '', md['name']) in OBJS.get(rt.key, {}):
        raise ApiError(409, 'AlreadyExists', f'{rt.gr} "{md["name"]}" already exists', rt.details(md['name']))
    for k in ('resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'selfLink', 'namespace'):
        md.pop(k, None)
    md.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1, **({'namespace': ns} if ns else {}))
    if rt.status_sub:
        obj.pop('status', None)
    prepare(rt, obj)
    return commit(rt.key, obj, 'ADDED')

def check_rv(rt, obj, cur, required):
    rv, name = obj['metadata'].get('resourceVersion'), cur['metadata']['name']
    if not rv and required:
        raise rt.invalid(name, [('metadata.resourceVersion', 'Invalid value: 0x0: must be specified for an update')])
    if rv and rv != cur['metadata']['resourceVersion']:
        raise ApiError(409, 'Conflict', f'Operation cannot be fulfilled on {rt.gr} "{name}": the object has been '
                       'modified; please apply your changes to the latest version and try again', rt.details(name))

def update(rt, obj, cur, status_only):
    """Store obj as the next version of cur: through /status only .status changes, otherwise never .status."""
    if status_only:
        obj, status = copy.deepcopy(cur), obj.get('status')
        obj.pop('status', None)
        obj.update({'status': status} if status is not None else {})
    else:
        for k in ('uid', 'creationTimestamp', 'generation', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'namespace', 'name'):
            obj['metadata'].pop(k, None)
            obj['metadata'].update({k: cur['metadata'][k]} if k in cur['metadata'] else {})
        if rt.status_sub:
            obj.pop('status', None)
            obj.update({'status': copy.deepcopy(cur['status'])} if 'status' in cur else {})
    md = obj['metadata']
    md['resourceVersion'] = cur['metadata']['resourceVersion']
    prepare(rt, obj)
    content = lambda o: {k: v for k, v in o.items() if k != 'metadata' and not (rt.status_sub and k == 'status')}
    if not status_only and content(obj) != content(cur):
        md['generation'] = cur['metadata'].get('generation', 1) + 1
    if obj == cur:
        return cur  # nothing changed: no new resourceVersion, no event
    if md.get('deletionTimestamp') and not md.get('finalizers'):
        return commit(rt.key, obj, 'DELETED')
    return commit(rt.key, obj, 'MODIFIED', cur)

def remove(key, cur):
    """Delete cur, or with finalizers only mark it as being deleted."""
    if not cur['metadata'].get('finalizers'):
        return commit(key, copy.deepcopy(cur), 'DELETED')
    if cur['metadata'].get('deletionTimestamp'):
        return cur
    obj = copy.deepcopy(cur)
    obj['metadata'].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
    return commit(key, obj, 'MODIFIED', cur)

def merge_patch(target, patch):  # RFC 7386
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    target = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        target.pop(k, None) if v is None else target.__setitem__(k, merge_patch(target.get(k), v))
    return target

def json_patch(doc, ops):  # RFC 6902, with the apiserver's reading of `test` on a missing path as null
    def locate(ptr):
        if not isinstance(ptr, str) or not ptr.startswith('/'):
            raise ValueError(f'invalid path {ptr!r}')
        *parents, k = [p.replace('~1', '/').replace('~0', '~') for p in ptr.split('/')[1:]]
        c = doc
        for p in parents:
            c = c[int(p)] if isinstance(c, list) else c[p]
        if isinstance(c, list):
            k = len(c) if k == '-' else int(k)
            if not 0 <= k <= len(c):
                raise IndexError(f'index {k} out of bounds in {ptr}')
        return c, k
    try:
        for op in ops:
            o, value = op['op'], op.get('value')
            if o in ('move', 'copy'):
                c, k = locate(op['from'])
                value = copy.deepcopy(c[k])
                if o == 'move':
                    del c[k]
            c, k = locate(op['path'])
            if o == 'test':
                if (c.get(k) if isinstance(c, dict) else c[k] if k < len(c) else None) != value:
                    raise ValueError(f'testing value {op["path"]} failed')
            elif o in ('remove', 'replace'):
                del c[k]
                if o == 'replace':
                    c.insert(k, value) if isinstance(c, list) else c.__setitem__(k, value)
            elif o in ('add', 'move', 'copy'):
                c.insert(k, value) if isinstance(c, list) else c.__setitem__(k, value)
            else:
                raise ValueError(f'unknown op {o!r}')
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, 'Invalid', f'the server rejected our request due to an error in our request: {e}')
    return doc

def apply(rt, ns, name, body, manager, status_only):
    """Server-side apply: (201, created) or (200, updated)."""
    if not manager:
        raise ApiError(422, 'Invalid', 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch')
    applied = check_body(rt, ns, body, apply=True)
    cur, akey = OBJS.get(rt.key, {}).get((ns or '', name)), (rt.key, ns or '', name, manager)
    if cur is None and status_only:
        raise rt.not_found(name)
    if applied['metadata'].get('name', name if cur else None) != name:  # the name comes from the stored object, if any
        raise bad(f'the name of the object ({applied["metadata"].get("name", "")}) does not match the name on the URL ({name})')
    if cur is None:
        obj = create(rt, ns, copy.deepcopy(applied))
        APPLIED[akey] = applied
        return 201, obj

    def drop_unapplied(obj, prev, new):
        for k, v in prev.items():
            if k not in new:
                obj.pop(k, None)
            elif isinstance(v, dict) and isinstance(new[k], dict) and isinstance(obj.get(k), dict):
                drop_unapplied(obj[k], v, new[k])

    def merge(dst, src):
        for k, v in src.items():
            merge(dst[k], v) if isinstance(v, dict) and isinstance(dst.get(k), dict) else dst.__setitem__(k, copy.deepcopy(v))
    obj = copy.deepcopy(cur)
    drop_unapplied(obj, APPLIED.get(akey, {}), applied)
    merge(obj, applied)
    check_rv(rt, obj, cur, False)
    result, APPLIED[akey] = update(rt, obj, cur, status_only), applied
    return 200, result

# ---- HTTP ------------------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self): self.dispatch('GET')
    def do_POST(self): self.dispatch('POST')
    def do_PUT(self): self.dispatch('PUT')
    def do_PATCH(self): self.dispatch('PATCH')
    def do_DELETE(self): self.dispatch('DELETE')

    def dispatch(self, method):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
                self.close_connection = True  # kube-rs and client-go always send Content-Length
                raise ApiError(411, 'LengthRequired', 'chunked request bodies are not supported by this fake')
            raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
            if res := self.route(method, [p for p in url.path.split('/') if p], q, raw):
                self.send_json(*res)
        except ApiError as e:
            self.send_json(e.code, status_obj(e.code, e.reason, e.message, e.details))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            traceback.print_exc()
            self.send_json(500, status_obj(500, 'InternalError', f'Internal error occurred: {e}'))

    def send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def parse(self, raw):  # apply-patch+yaml bodies too must be JSON, as kube-rs sends them
        try:
            return json.loads(raw)
        except ValueError:
            raise bad('the body of the request was in an unknown format (this fake reads only JSON bodies)')

    def route(self, method, parts, q, raw):
        if parts[:1] == ['_fake']:
            return control(method, parts[1:], q)
        if method == 'GET' and parts == ['version']:
            return 200, VERSION
        if method == 'GET' and parts == ['api']:
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": '127.0.0.1:%d' % self.server.server_address[1]}]}
        if len(parts) >= 4 and parts[0] == 'apis':
            return self.resource(method, parts[1], parts[2], parts[3:], q, raw)
        raise no_path()

    def resource(self, method, group, version, rest, q, raw):
        ns = None
        if rest[0] == 'namespaces' and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural, name, sub = (rest + [None, None])[:3]
        with LOCK:
            rt = resolve(group, version, plural)
        if (rt is None or len(rest) > 3 or (sub is not None and (sub != 'status' or not rt.status_sub))
                or (ns is not None and not rt.namespaced) or (ns is None and rt.namespaced and name is not None)):
            raise no_path()
        if rt.namespaced and ns is None and method != 'GET':
            raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
        at, ctype = (ns or '', name), self.headers.get('Content-Type', '').split(';')[0].strip()
        if name is None and method == 'GET':
            return self.watch(rt, ns, q) if q.get('watch') in ('1', 't', 'true', 'True') else list_objects(rt, ns, q)
        if name is None and method == 'POST':
            obj = check_body(rt, ns, self.parse(raw))
            with LOCK:
                return 201, rt.out(create(rt, ns, obj))
        if name is None and method == 'DELETE':
            match = Filter(ns, q)
            with LOCK:
                gone = [rt.out(remove(rt.key, o)) for o in match.current(rt)]
                return 200, {"apiVersion": rt.api_version, "kind": rt.kind + 'List', "metadata": {"resourceVersion": str(RV)}, "items": gone}
        if name is None or (method == 'DELETE' and sub) or method not in ('GET', 'PUT', 'PATCH', 'DELETE'):
            raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
        if method == 'PATCH' and ctype not in (APPLY, MERGE, JSONPATCH):
            raise ApiError(415, 'UnsupportedMediaType', 'the body of the request was in an unknown format - accepted media '
                           f'types include: {JSONPATCH}, {MERGE}, {APPLY}')
        body = self.parse(raw) if method in ('PUT', 'PATCH') or raw.strip() else {}
        with LOCK:
            if method == 'PATCH' and ctype == APPLY:
                code, obj = apply(rt, ns, name, body, q.get('fieldManager'), sub == 'status')
                return code, rt.out(obj)
            if (cur := OBJS.get(rt.key, {}).get(at)) is None:
                raise rt.not_found(name)
            if method == 'GET':
                return 200, rt.out(cur)
            if method == 'DELETE':
                if not isinstance(body, dict):
                    raise bad('the body of a delete must be DeleteOptions')
                for f, label in (('uid', 'UID'), ('resourceVersion', 'ResourceVersion')):
                    if (want := (body.get('preconditions') or {}).get(f)) and want != cur['metadata'].get(f):
                        raise ApiError(409, 'Conflict', f'Precondition failed: {label} in precondition: {want}, {label} '
                                       f'in object meta: {cur["metadata"].get(f)}', rt.details(name))
                return 200, rt.out(remove(rt.key, cur))
            if method == 'PATCH' and ctype == JSONPATCH and not isinstance(body, list):
                raise bad('the body of a json patch must be a list of operations')
            if method == 'PATCH':
                doc = copy.deepcopy(rt.out(cur))
                body = merge_patch(doc, body) if ctype == MERGE else json_patch(doc, body)
            obj = check_body(rt, ns, body, name)
            check_rv(rt, obj, cur, method == 'PUT')
            return 200, rt.out(update(rt, obj, cur, sub == 'status'))

    def watch(self, rt, ns, q):
        match, rv, flag = Filter(ns, q), q.get('resourceVersion', ''), lambda k: q.get(k) in ('1', 't', 'true', 'True')
        initial, timeout = flag('sendInitialEvents'), float(q.get('timeoutSeconds') or 1800)
        bookmarks = flag('allowWatchBookmarks') or initial
        if rv and not rv.isdigit():
            raise bad(f'resourceVersion: Invalid value: "{rv}": must be an unsigned integer')
        bookmark = lambda rv, ann={}: {"type": "BOOKMARK", "object": {"apiVersion": rt.api_version, "kind": rt.kind,
                                       "metadata": {"resourceVersion": str(rv), **({"annotations": ann} if ann else {})}}}
        with LOCK:
            count(rt, 'watches')
            cursor, pending, done = RV, [], rv not in ('', '0') and not initial and int(rv) < COMPACTED
            if done:  # as the real server: a 200 stream with one ERROR event
                STATS['expired_410'] += 1
                pending.append({"type": "ERROR", "object": status_obj(410, 'Expired', f'too old resource version: {rv} ({COMPACTED})')})
            elif rv in ('', '0') or initial:  # the current objects as synthetic ADDED events
                pending = [{"type": "ADDED", "object": rt.out(o)} for o in match.current(rt)]
                pending += [bookmark(cursor, {"k8s.io/initial-events-end": "true"})] if initial else []
            else:
                cursor = int(rv)
            epoch = EPOCH
            STATS['watches_open'] += 1
        try:
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Transfer-Encoding', 'chunked')
            self.send_header('Cache-Control', 'no-cache, private')
            self.end_headers()
            deadline, next_bm = time.monotonic() + timeout, time.monotonic() + 1
            while True:
                for ev in pending:
                    line = json.dumps(ev).encode() + b'\n'
                    self.wfile.write(b'%x\r\n%s\r\n' % (len(line), line))
                if done:
                    self.wfile.write(b'0\r\n\r\n')
                    return
                with LOCK:
                    while True:
                        if EPOCH != epoch:  # break-watches or compact: drop the connection mid-stream
                            self.close_connection = True
                            return
                        t = time.monotonic()
                        if (HISTORY and HISTORY[-1][0] > cursor) or t >= deadline or (bookmarks and t >= next_bm):
                            break
                        LOCK.wait((min(deadline, next_bm) if bookmarks else deadline) - t)
                    start = bisect.bisect_right(HISTORY, cursor, key=lambda e: e[0])
                    pending = [e for e in (watch_event(rt, match, h) for h in HISTORY[start:]) if e]
                    cursor, done = max(cursor, RV), t >= deadline
                    if bookmarks and t >= next_bm:
                        pending.append(bookmark(cursor))
                        next_bm = t + 1
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with LOCK:
                STATS['watches_open'] -= 1

def watch_event(rt, match, h):
    """What a watch sees of a history entry: selector changes make a MODIFIED an ADDED or a DELETED."""
    _, etype, key, obj, old = h
    if key != rt.key:
        return None
    now_in, was_in = match(obj), old is not None and match(old)
    if etype == 'MODIFIED':
        etype = 'MODIFIED' if now_in and was_in else 'ADDED' if now_in else 'DELETED' if was_in else None
    elif not now_in:
        etype = None
    return etype and {"type": etype, "object": rt.out(obj)}

def count(rt, what):
    STATS[what] += 1
    STATS['by_resource'].setdefault(rt.gr, {"lists": 0, "watches": 0})[what] += 1

def list_objects(rt, ns, q):
    match, limit = Filter(ns, q), int(q.get('limit') or 0)
    with LOCK:
        count(rt, 'lists')
        if q.get('continue'):
            try:
                token = json.loads(base64.urlsafe_b64decode(q['continue']))
                (sid, off), (rv, items) = (token['id'], token['off']), SNAPS[token['id']]
            except Exception:
                raise bad('continue key is not valid')
        else:
            sid, off, rv, items = None, 0, RV, match.current(rt)
        meta = {"resourceVersion": str(rv)}
        if limit > 0 and len(items) - off > limit:
            if sid is None:
                sid = len(SNAPS) + 1
                SNAPS[sid] = (rv, items)
            meta['continue'] = base64.urlsafe_b64encode(json.dumps({"id": sid, "off": off + limit}).encode()).decode()
            meta['remainingItemCount'] = len(items) - off - limit
        page = items[off:off + limit] if limit > 0 else items[off:]
        return 200, {"apiVersion": rt.api_version, "kind": rt.kind + 'List', "metadata": meta, "items": [rt.out(o) for o in page]}

def control(method, parts, q):
    global RV, COMPACTED, EPOCH
    with LOCK:
        if method == 'GET' and parts == ['stats']:
            return 200, STATS
        if method == 'POST' and parts in (['break-watches'], ['compact']):
            EPOCH += 1
            LOCK.notify_all()
            if parts == ['break-watches']:
                return 200, {"closed": STATS['watches_open']}
            RV += 1
            COMPACTED = RV
            HISTORY.clear()
            return 200, {"compacted": RV}
        if method == 'POST' and parts == ['delete-pod']:
            deleted, ns, pod = [], q.get('namespace', ''), q.get('name', '')
            for key, table in list(OBJS.items()):
                for (ons, name), o in sorted(table.items()) if key != CRD_KEY else []:
                    if ons == ns and any(r.get('kind') == 'Pod' and r.get('name') == pod for r in o['metadata'].get('ownerReferences') or []):
                        remove(key, o)
                        deleted.append(name)
            return 200, {"deleted": deleted}
    raise no_path()

class Server(ThreadingHTTPServer):
    daemon_threads, block_on_close, request_queue_size = True, False, 128

    def server_bind(self):  # HTTPServer's would look up the host name, which can stall in a sandbox
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = '127.0.0.1', self.server_address[1]

def load_crds(path):
    with open(path) as f:
        text = f.read()
    try:
        docs = json.loads(text)
        docs = docs if isinstance(docs, list) else [docs]
    except ValueError:
        if yaml is None:
            sys.exit(f'kube_api: {path} is not JSON (YAML needs PyYAML, which is not installed)')
        docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        for crd in doc.get('items', []) if doc.get('kind') == 'List' else [doc]:
            with LOCK:
                create(CRD_RT, None, check_body(CRD_RT, None, crd))

def main():
    p = argparse.ArgumentParser(description='Fake Kubernetes API server for tests (plain HTTP on 127.0.0.1).')
    p.add_argument('--port', type=int, default=0, help='port to listen on; 0 picks a free one')
    p.add_argument('--crd', action='append', default=[], help='CustomResourceDefinition file to install (JSON; YAML with PyYAML)')
    args = p.parse_args()
    for path in args.crd:
        try:
            load_crds(path)
        except ApiError as e:
            sys.exit(f'kube_api: {path}: {e.message}')
    server = Server(('127.0.0.1', args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f'listening on 127.0.0.1:{server.server_address[1]}', flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

if __name__ == '__main__':
    main()
