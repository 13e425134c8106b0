/** OpenAPI 3 description of the rules API (served at /openapi.json, rendered by Swagger UI at /docs). */
import { documentSchema } from './schema.js';

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
      '/source': {
        get: { summary: 'The generated AssemblyScript of the active document (for review)', responses: { '200': { description: 'AssemblyScript source', content: { 'text/plain': { schema: { type: 'string' } } } } } },
      },
    },
    components: {
      schemas: {
        Document: documentSchema,
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
