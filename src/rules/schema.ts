/**
 * JSON Schema of an fr_script document (also published in /openapi.json), validated with ajv.
 * Unknown keys are errors: a typo must not silently disable a rule.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { RulesDocument } from './ast.js';
import { RulesError, RulesErrorCode } from './errors.js';

const template = {
  type: ['string', 'object'],
  description: 'A string, in which each {{ expression }} is replaced by its value, or a JSON object published as JSON (a string that is exactly {{ expression }} becomes the typed value)',
} as const;

const setState = {
  type: 'object',
  additionalProperties: false,
  required: ['key', 'value'],
  description: 'When the statement fires, sets key (placeholders {2}, {topic}) to value (a template) through the state store',
  properties: {
    key: { type: 'string', minLength: 1, description: 'State key; {n} is topic level n, {topic} the whole topic' },
    value: template,
    px: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Expiry in milliseconds' },
  },
} as const;

const filterStatement = {
  type: 'object',
  additionalProperties: false,
  required: ['condition'],
  properties: {
    condition: { type: 'string', description: 'Condition over the JSON payload, e.g. `$inside.temperature >= 45 and $inside.humidity <= 15`' },
    new_payload: { ...template, description: '"" republishes the incoming payload; any other string is published as its UTF-8 bytes ({{ expression }} replaced); an object is published as JSON. Leave it out with set_state to only write.' },
    set_state: setState,
  },
} as const;

const filter = {
  type: 'object',
  additionalProperties: false,
  required: ['topic', 'subtopic', 'statements'],
  properties: {
    topic: { type: 'string', minLength: 1, description: 'MQTT topic filter (+ and # wildcards)' },
    subtopic: { type: 'string', minLength: 1, description: 'Levels appended to the incoming topic for the output: house/1 + alert/ -> house/1/alert/' },
    statements: { type: 'array', items: filterStatement },
  },
} as const;

const ruleStatement = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'topic', 'payload_type', 'condition'],
  properties: {
    id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'Unique across the document; referred to as $id in operations' },
    topic: { type: 'string', minLength: 1, description: 'MQTT topic filter' },
    payload_type: { type: 'string', enum: ['int', 'float', 'str', 'bool'], description: "Type the statement's variables are converted to" },
    condition: { type: 'string' },
  },
} as const;

const ruleLogic = {
  type: 'object',
  additionalProperties: false,
  required: ['operations', 'new_topic'],
  properties: {
    operations: { type: 'string', description: 'Logic over statement ids, e.g. ( $1 ) and ( $2 )' },
    new_topic: { type: 'string', minLength: 1, description: 'Published with a ! prefix' },
    new_payload: { ...template, description: '"" publishes a JSON object of the buffered messages, keyed by topic; otherwise a template, evaluated against the message that triggered the evaluation' },
    set_state: setState,
  },
} as const;

const rule = {
  type: 'object',
  additionalProperties: false,
  required: ['statements', 'logic'],
  properties: {
    statements: { type: 'array', items: ruleStatement },
    logic: { type: 'array', items: ruleLogic },
  },
} as const;

export const documentSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    filters: { type: 'array', items: filter, default: [] },
    rules: { type: 'array', items: rule, default: [] },
  },
} as const;

// Compiled on first use: a broker with no rules document never pays for it at start.
let validator: ValidateFunction | undefined;

function describe(error: ErrorObject): RulesError {
  let path = error.instancePath.replace(/^\//, '');
  let problem: string;
  switch (error.keyword) {
    case 'additionalProperties': {
      const key = String(error.params['additionalProperty']);
      path = path ? `${path}/${key}` : key;
      problem = `unknown key "${key}"`;
      break;
    }
    case 'required': {
      const key = String(error.params['missingProperty']);
      path = path ? `${path}/${key}` : key;
      problem = 'missing';
      break;
    }
    case 'type':
      problem = `must be ${String(error.params['type']).split(',').join(' or ')}`;
      break;
    case 'enum':
      problem = `must be one of ${(error.params['allowedValues'] as unknown[]).join(', ')}`;
      break;
    default:
      problem = error.message ?? error.keyword;
  }
  return new RulesError(RulesErrorCode.schema, path, problem);
}

/** Validates the shape and fills defaults (missing arrays, empty new_payload). Throws RulesError. */
export function validateDocument(input: unknown): RulesDocument {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new RulesError(RulesErrorCode.schema, '', 'a document is a JSON object with "filters" and "rules"');
  }
  const copy = structuredClone(input);
  const validate = (validator ??= new Ajv({ allErrors: false, useDefaults: true, coerceTypes: false, strict: true, allowUnionTypes: true }).compile(documentSchema));
  if (!validate(copy)) throw describe(validate.errors![0]!);
  const doc = copy as RulesDocument;
  // new_payload defaults to "" unless the statement only writes state
  for (const f of doc.filters) for (const st of f.statements) if (st.new_payload === undefined && st.set_state === undefined) st.new_payload = '';
  for (const r of doc.rules) for (const l of r.logic) if (l.new_payload === undefined && l.set_state === undefined) l.new_payload = '';
  return doc;
}
