/**
 * JSON Schema of an fr_script document (also published in /openapi.json), validated with ajv.
 * Unknown keys are errors: a typo must not silently disable a rule.
 */
import type { ErrorObject, ValidateFunction } from 'ajv';
import { createAjv } from '../config/ajv.js';
import type { RulesDocument } from './ast.js';
import { RulesError, RulesErrorCode } from './errors.js';
import { didYouMean } from '../config/suggest.js';

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
// allErrors: the most telling of the errors is reported (a misspelt key rather than the
// "missing" key it leaves behind); verbose: the errors carry their schema, for the shapes.
let validator: ValidateFunction | undefined;

interface SchemaNode {
  type?: string | readonly string[];
  properties?: Record<string, SchemaNode>;
  required?: readonly string[];
  items?: SchemaNode;
  enum?: readonly unknown[];
}

/** A schema as a short example of what is expected: `[{"operations": "…", "new_topic": "…"}]`. */
function shape(node: SchemaNode | undefined, depth = 0): string {
  if (!node) return 'a value';
  if (Array.isArray(node.type)) return node.type.map((t) => (t === 'string' ? '"…"' : t === 'object' ? '{…}' : t)).join(' or ');
  switch (node.type) {
    case 'string':
      return node.enum ? node.enum.map((v) => JSON.stringify(v)).join(' | ') : '"…"';
    case 'integer':
      return '1';
    case 'array':
      return depth > 1 ? '[…]' : `[${shape(node.items, depth + 1)}, …]`;
    case 'object': {
      if (depth > 1) return '{…}';
      const keys = Object.entries(node.properties ?? {}).map(([k, v]) => `"${k}": ${shape(v, depth + 1)}`);
      return `{${keys.join(', ')}}`;
    }
    default:
      return 'a value';
  }
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  switch (typeof value) {
    case 'string':
      return `a string (${JSON.stringify(value.length > 30 ? `${value.slice(0, 30)}…` : value)})`;
    case 'number':
      return Number.isInteger(value) ? `the number ${value}` : `the number ${value} (not a whole number)`;
    case 'boolean':
      return String(value);
    case 'object':
      return 'an object';
    default:
      return typeof value;
  }
}

const TYPE_WORDS: Record<string, string> = { string: 'a string', integer: 'a whole number', array: 'a list', object: 'an object', boolean: 'true or false' };

/** What the object at a path is, in words: "a filter", "a rule statement". */
function objectName(instancePath: string): string {
  const p = instancePath.replace(/^\//, '').replace(/\/\d+/g, '/#');
  const names: Record<string, string> = {
    'filters/#': 'a filter',
    'filters/#/statements/#': 'a filter statement',
    'rules/#': 'a rule',
    'rules/#/statements/#': 'a rule statement',
    'rules/#/logic/#': 'a logic entry',
  };
  return names[p] ?? 'this object';
}

/** Which of several errors to report: the one that says most about the mistake. */
const RANK: Record<string, number> = { type: 0, enum: 1, additionalProperties: 2, minimum: 3, maximum: 3, minLength: 3, required: 4 };

function describe(error: ErrorObject): RulesError {
  let path = error.instancePath.replace(/^\//, '');
  let problem: string;
  const parent = error.parentSchema as SchemaNode | undefined;
  switch (error.keyword) {
    case 'additionalProperties': {
      const key = String(error.params['additionalProperty']);
      path = path ? `${path}/${key}` : key;
      const known = Object.keys(parent?.properties ?? {});
      problem = `unknown key "${key}"${didYouMean(key, known) || `; the keys here are ${known.map((k) => `"${k}"`).join(', ')}`}`;
      break;
    }
    case 'required': {
      const key = String(error.params['missingProperty']);
      path = path ? `${path}/${key}` : key;
      const required = (parent?.required ?? []).map((k) => `"${k}"`);
      problem = `missing; ${objectName(error.instancePath)} needs ${required.join(', ')}: ${shape(parent)}`;
      break;
    }
    case 'type': {
      const want = String(error.params['type'])
        .split(',')
        .map((t) => TYPE_WORDS[t] ?? t)
        .join(' or ');
      const example = parent?.type === 'array' || parent?.type === 'object' ? ` like ${shape(parent)}` : '';
      problem = `expected ${want}${example}, got ${kindOf(error.data)}`;
      break;
    }
    case 'enum':
      problem = `expected one of ${(error.params['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}, got ${kindOf(error.data)}${typeof error.data === 'string' ? didYouMean(error.data, (error.params['allowedValues'] as unknown[]).map(String)) : ''}`;
      break;
    case 'minLength':
      problem = 'must not be empty';
      break;
    case 'minimum':
      problem = `must be at least ${String(error.params['limit'])}, got ${kindOf(error.data)}`;
      break;
    case 'maximum':
      problem = `must be at most ${String(error.params['limit'])}, got ${kindOf(error.data)}`;
      break;
    default:
      problem = error.message ?? error.keyword;
  }
  return new RulesError(RulesErrorCode.schema, path, problem);
}

/** The error to report of those ajv found: by RANK, then the first in the document. */
function mostTelling(errors: readonly ErrorObject[]): ErrorObject {
  let best = errors[0]!;
  for (const e of errors) if ((RANK[e.keyword] ?? 5) < (RANK[best.keyword] ?? 5)) best = e;
  return best;
}

/** Validates the shape and fills defaults (missing arrays, empty new_payload). Throws RulesError. */
export function validateDocument(input: unknown): RulesDocument {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new RulesError(RulesErrorCode.schema, '', 'a document is a JSON object with "filters" and "rules"');
  }
  const copy = structuredClone(input);
  const validate = (validator ??= createAjv({ allErrors: true, verbose: true, useDefaults: true, coerceTypes: false, strict: true, allowUnionTypes: true }).compile(documentSchema));
  if (!validate(copy)) throw describe(mostTelling(validate.errors!));
  const doc = copy as RulesDocument;
  // new_payload defaults to "" unless the statement only writes state
  for (const f of doc.filters) for (const st of f.statements) if (st.new_payload === undefined && st.set_state === undefined) st.new_payload = '';
  for (const r of doc.rules) for (const l of r.logic) if (l.new_payload === undefined && l.set_state === undefined) l.new_payload = '';
  return doc;
}
