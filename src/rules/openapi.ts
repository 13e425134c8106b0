/** OpenAPI 3 description of the rules API (served at /openapi.json, rendered by Swagger UI at /docs). */
import { documentSchema } from './schema.js';

/** OpenAPI 3.0 has no type lists: `type: ['string', 'object']` becomes a oneOf. */
function openApiSchema(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(openApiSchema);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema as Record<string, unknown>)) {
    if (k === 'type' && Array.isArray(v)) out['oneOf'] = v.map((t) => ({ type: t }));
    else out[k] = openApiSchema(v);
  }
  return out;
}

export function openApiDocument(basePath: string): Record<string, unknown> {
  const error = {
    description: 'The document was refused; the active document is unchanged.',
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  };
  const written = {
    description: 'The new document is active (compiled; rule output starts now).',
    headers: { ETag: { schema: { type: 'string' } } },
    content: { 'application/json': { schema: { $ref: '#/components/schemas/WriteResult' } } },
  };
  const ifMatch = { name: 'If-Match', in: 'header', required: false, description: 'Write only if this is the active document\'s ETag (412 otherwise)', schema: { type: 'string' } };
  const body = { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/Document' } } } };
  const writeResponses = { '200': written, '400': { ...error, description: 'Not JSON' }, '412': { ...error, description: 'If-Match is stale' }, '413': { ...error, description: 'Body too large' }, '422': { ...error, description: 'Not a valid fr_script document' } };
  return {
    openapi: '3.0.3',
    info: {
      title: 'Edge Data Broker rules (fr_script)',
      version: '1.0.0',
      description: 'Filters and multi-topic rules evaluated inside the broker, compiled to WebAssembly. See docs/rules.md.',
    },
    servers: [{ url: basePath === '' ? '/' : basePath }],
    paths: {
      '/': {
        get: {
          summary: 'The active document',
          responses: { '200': { description: 'The active document', headers: { ETag: { schema: { type: 'string' } } }, content: { 'application/json': { schema: { $ref: '#/components/schemas/Document' } } } }, '304': { description: 'Not modified (If-None-Match)' } },
        },
        post: { summary: 'Replace the whole document (empties the rule buffer)', parameters: [ifMatch], requestBody: body, responses: writeResponses },
        patch: { summary: 'Add filters and rules; a rule sharing a statement id replaces the old rule', parameters: [ifMatch], requestBody: body, responses: writeResponses },
        delete: { summary: 'Remove everything (the empty document)', parameters: [ifMatch], responses: { '200': written, '412': writeResponses['412'] } },
      },
      '/test': {
        post: {
          summary: 'Try a document on messages without activating it (deterministic; the live broker, its memory and the state store are not touched)',
          description:
            'Runs `document` (default: the active one) over `messages` from empty memory, with the timestamps `t` of the request (milliseconds; default: the previous message\'s, 0 for the first). state() reads `state` when given, else the live store (read only); set_state writes are kept for the later messages of this run. Answers one entry per publish and per state write, in the order the broker would do them; `after` is the index of the input message. A bad document gets the same errors as an upload, with paths under `document/`.',
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/TestRequest' } } } },
          responses: {
            '200': { description: 'What the document would publish and write', content: { 'application/json': { schema: { $ref: '#/components/schemas/TestResult' } } } },
            '400': { ...error, description: 'Not JSON' },
            '413': { ...error, description: 'Body too large' },
            '422': { ...error, description: 'Not a valid request or document' },
          },
        },
      },
      '/source': {
        get: { summary: 'The generated AssemblyScript of the active document (for review)', responses: { '200': { description: 'AssemblyScript source', content: { 'text/plain': { schema: { type: 'string' } } } } } },
      },
    },
    components: {
      schemas: {
        Document: openApiSchema(documentSchema),
        TestRequest: {
          type: 'object',
          additionalProperties: false,
          required: ['messages'],
          properties: {
            document: { $ref: '#/components/schemas/Document' },
            messages: {
              type: 'array',
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['topic'],
                properties: {
                  topic: { type: 'string', example: 'plant/3/temp' },
                  payload: { description: 'A string, or any JSON value (sent as its JSON text)', example: { c: 33 } },
                  t: { type: 'number', description: 'Arrival time in milliseconds', example: 120000 },
                },
              },
            },
            state: { type: 'object', additionalProperties: true, description: 'State store values for state() (a string is used as is, anything else as its JSON text)', example: { 'limits/3': 30 } },
          },
        },
        TestResult: {
          type: 'object',
          properties: {
            outputs: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  after: { type: 'integer' },
                  topic: { type: 'string' },
                  payload: { type: 'string' },
                  set_state: { type: 'object', properties: { key: { type: 'string' }, value: { type: 'string' }, px: { type: 'integer' } } },
                },
              },
            },
          },
        },
        WriteResult: {
          type: 'object',
          properties: { etag: { type: 'string' }, filters: { type: 'integer' }, rules: { type: 'integer' }, statements: { type: 'integer' }, compileMillis: { type: 'integer' } },
        },
        Error: {
          type: 'object',
          properties: {
            error: {
              type: 'object',
              properties: {
                code: { type: 'string', example: 'EDB_RULES_SYNTAX' },
                path: { type: 'string', example: 'rules/0/statements/1/condition' },
                problem: { type: 'string', example: "unexpected ')'" },
                position: { type: 'integer', example: 14 },
                message: { type: 'string' },
              },
            },
          },
        },
      },
    },
  };
}
