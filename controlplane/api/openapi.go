package api

// openAPI documents the API (OpenAPI 3.0). Served at /v1/openapi.json.
const openAPI = `{
  "openapi": "3.0.3",
  "info": {"title": "govcloud controller", "version": "v1",
    "description": "Declarative network and compute configuration of a shared multi-department cloud. Every request carries 'Authorization: Bearer TOKEN'; roles: admin (everything), network (departments, pools, segments, services, hosts), department (read-only, own department), agent (own host's desired state and status)."},
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "Error": {"type": "object", "required": ["code", "error"], "properties": {
        "code": {"type": "string", "enum": ["invalid", "conflict", "forbidden", "unauthorized", "not_found", "bad_request", "internal", "unavailable"]},
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
          "file": {"type": "string"}, "line": {"type": "integer"}, "document": {"type": "integer"},
          "kind": {"type": "string"}, "name": {"type": "string"}, "field": {"type": "string"},
          "value": {"type": "string"}, "message": {"type": "string"}}}}}},
      "Change": {"type": "object", "properties": {"kind": {"type": "string"}, "name": {"type": "string"},
        "action": {"type": "string", "enum": ["create", "update", "delete", "unchanged"]},
        "fields": {"type": "array", "items": {"type": "string"}}}},
      "ApplyResult": {"type": "object", "properties": {"dryRun": {"type": "boolean"}, "revision": {"type": "integer"},
        "changes": {"type": "array", "items": {"$ref": "#/components/schemas/Change"}},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
      "Object": {"type": "object", "description": "A resource as stored, with convenience fields name, department, vip, addresses, vlan.",
        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string", "enum": ["Department", "AddressPool", "Segment", "Host", "Volume", "VM", "Service"]},
          "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
          "spec": {"type": "object"}, "status": {"type": "object"},
          "name": {"type": "string"}, "department": {"type": "string"}, "vip": {"type": "string"},
          "addresses": {"type": "array", "items": {"type": "string"}}, "vlan": {"type": "integer"}, "revision": {"type": "integer"}}},
      "DesiredState": {"type": "object", "description": "What one host must realize (Go type controlplane/desired.State).",
        "properties": {"host": {"type": "string"}, "revision": {"type": "integer"}, "departments": {"type": "array", "items": {"type": "object"}},
          "segments": {"type": "array", "items": {"type": "object"}}, "services": {"type": "array", "items": {"type": "object"}},
          "bgp": {"type": "object"}, "vms": {"type": "array", "items": {"type": "object"}}, "volumes": {"type": "array", "items": {"type": "object"}}}},
      "Token": {"type": "object", "properties": {"name": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "network", "department", "agent"]},
        "department": {"type": "string"}, "host": {"type": "string"}}}
    },
    "responses": {
      "Error": {"description": "failure; nothing was changed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    }
  },
  "security": [{"bearer": []}],
  "paths": {
    "/v1/apply": {"post": {"summary": "Apply a YAML file atomically (all or nothing)",
      "parameters": [
        {"name": "dryRun", "in": "query", "schema": {"type": "boolean"}, "description": "plan only"},
        {"name": "prune", "in": "query", "schema": {"type": "boolean"}, "description": "delete stored objects absent from the file (admin)"},
        {"name": "baseRevision", "in": "query", "schema": {"type": "integer"}, "description": "fail with 409 if an object in the file changed after this revision"},
        {"name": "X-Govcloud-File", "in": "header", "schema": {"type": "string"}, "description": "file name used in error messages"}],
      "requestBody": {"required": true, "content": {"application/yaml": {"schema": {"type": "string"}}}},
      "responses": {"200": {"description": "applied", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApplyResult"}}}},
        "401": {"$ref": "#/components/responses/Error"}, "403": {"$ref": "#/components/responses/Error"},
        "409": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}},
    "/v1/plan": {"post": {"summary": "What apply would do; changes nothing",
      "requestBody": {"required": true, "content": {"application/yaml": {"schema": {"type": "string"}}}},
      "responses": {"200": {"description": "plan", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApplyResult"}}}},
        "422": {"$ref": "#/components/responses/Error"}}}},
    "/v1/objects/{kind}": {"get": {"summary": "List objects of a kind (plural or singular, case-insensitive)",
      "parameters": [{"name": "kind", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "department", "in": "query", "schema": {"type": "string"}}],
      "responses": {"200": {"description": "objects", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Object"}}}}},
        "403": {"$ref": "#/components/responses/Error"}}}},
    "/v1/objects/{kind}/{name}": {
      "get": {"summary": "One object", "parameters": [{"name": "kind", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "object", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Object"}}}},
          "403": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}},
      "delete": {"summary": "Delete one object (refused while others refer to it)", "parameters": [{"name": "kind", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "deleted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApplyResult"}}}},
          "404": {"$ref": "#/components/responses/Error"}, "422": {"$ref": "#/components/responses/Error"}}}},
    "/v1/hosts/{name}/desired": {"get": {"summary": "A host's desired state; long-polls until the state revision exceeds 'after'",
      "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "after", "in": "query", "schema": {"type": "integer"}}, {"name": "timeout", "in": "query", "schema": {"type": "string", "example": "30s"}}],
      "responses": {"200": {"description": "desired state", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DesiredState"}}}},
        "304": {"description": "no change before the timeout"}, "403": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}},
    "/v1/hosts/{name}/status": {"put": {"summary": "An agent reports its host's status (any JSON)",
      "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
      "responses": {"200": {"description": "stored"}, "403": {"$ref": "#/components/responses/Error"}}}},
    "/v1/hosts/{name}/compute-status": {"put": {"summary": "A compute agent reports its host's VMs (any JSON), kept apart from the network agent's status",
      "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
      "responses": {"200": {"description": "stored"}, "403": {"$ref": "#/components/responses/Error"}}}},
    "/v1/status": {"get": {"summary": "Controller status: leader, revision, object counts, host and compute reports", "responses": {"200": {"description": "status"}}}},
    "/v1/audit": {"get": {"summary": "Audit log, newest first (admin, network)", "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}], "responses": {"200": {"description": "entries"}}}},
    "/v1/tokens": {"post": {"summary": "Create a token (admin); the token is returned once",
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Token"}}}},
      "responses": {"201": {"description": "token"}, "403": {"$ref": "#/components/responses/Error"}}},
      "get": {"summary": "List grants (admin); tokens themselves are never stored", "responses": {"200": {"description": "grants"}}}},
    "/v1/tokens/{name}": {"delete": {"summary": "Revoke every token with this name (admin); other controllers forget it within 2 s",
      "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "responses": {"200": {"description": "revoked"}, "403": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}},
    "/v1/whoami": {"get": {"summary": "The caller's grant", "responses": {"200": {"description": "grant"}}}},
    "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI document"}}}}
  }
}`
