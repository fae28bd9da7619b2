import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { DropserveError } from '../errors.ts';
import type { Tokenizer } from './tokenizer.ts';

/**
 * Chat messages → prompt text, through the model's Jinja chat template (@huggingface/jinja, the
 * same variables transformers' apply_chat_template passes: messages, bos_token, eos_token,
 * add_generation_prompt).
 *
 * Models without a template (llama2.c checkpoints, the synthetic model, story models) get
 * FALLBACK_CHAT_TEMPLATE: one "Role: content" line per message, role capitalised, and with
 * addGenerationPrompt a final "Assistant:" for the model to continue. No BOS in the text: the
 * caller adds it when encoding.
 */

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatRenderOptions {
  addGenerationPrompt?: boolean;
  /** Overrides the tokenizer's template (e.g. a request's chat_template). */
  template?: string;
}

export interface RenderedChat {
  text: string;
  /** The text already starts with the BOS string, so encode it without adding BOS again. */
  hasBos: boolean;
}

export const FALLBACK_CHAT_TEMPLATE =
  '{% for message in messages %}' +
  '{{ message.role[0] | upper }}{{ message.role[1:] }}: {{ message.content }}\n' +
  '{% endfor %}' +
  '{% if add_generation_prompt %}Assistant:{% endif %}';

/** Marks a template's own raise_exception() so it becomes a client error, not an internal one. */
class TemplateRaised extends Error {}

const parsedTemplates = new Map<string, Template>();
const MAX_CACHED_TEMPLATES = 16;

export function renderChatPrompt(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  options: ChatRenderOptions = {},
): RenderedChat {
  const source = options.template ?? tokenizer.chatTemplate ?? FALLBACK_CHAT_TEMPLATE;
  const template = parseTemplate(source);
  const bos = tokenizer.specialTokens.bos;
  let text: string;
  try {
    text = renderWith(template, {
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      bos_token: bos ?? '',
      eos_token: tokenizer.specialTokens.eos ?? '',
      add_generation_prompt: options.addGenerationPrompt ?? false,
    });
  } catch (e) {
    if (e instanceof TemplateRaised) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `chat template rejected the messages: ${e.message}`, {
        param: 'messages',
        cause: e,
      });
    }
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `chat template failed to render: ${(e as Error).message}`,
      {
        param: 'messages',
        cause: e,
      },
    );
  }
  return { text, hasBos: bos !== undefined && bos !== '' && text.startsWith(bos) };
}

/**
 * Template.render() cannot take our own raise_exception (its globals are declared first and may not
 * be redeclared), so the globals are set up here: the same names transformers provides, with a
 * raise_exception whose error we can tell apart from a template bug.
 */
function renderWith(template: Template, variables: Record<string, unknown>): string {
  const env = new Environment();
  const globals: Record<string, unknown> = {
    true: true,
    false: false,
    none: null,
    True: true,
    False: false,
    None: null,
    range: pythonRange,
    strftime_now: strftimeNow,
    raise_exception: (message: unknown) => {
      throw new TemplateRaised(String(message));
    },
    ...variables,
  };
  for (const [name, value] of Object.entries(globals)) env.set(name, value);
  const result = new Interpreter(env).run(template.parsed);
  return String(result.value);
}

function pythonRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error('range() step must not be zero');
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

/** The strftime subset chat templates use for "today's date" lines. */
function strftimeNow(format: string): string {
  const now = new Date();
  const pad = (n: number) => String(n).padStart(2, '0');
  const month = (style: 'long' | 'short') => new Intl.DateTimeFormat('en-US', { month: style }).format(now);
  return format.replace(/%[YmdbBHM%]/g, (token) => {
    switch (token) {
      case '%Y':
        return String(now.getFullYear());
      case '%m':
        return pad(now.getMonth() + 1);
      case '%d':
        return pad(now.getDate());
      case '%b':
        return month('short');
      case '%B':
        return month('long');
      case '%H':
        return pad(now.getHours());
      case '%M':
        return pad(now.getMinutes());
      default:
        return '%';
    }
  });
}

function parseTemplate(source: string): Template {
  let template = parsedTemplates.get(source);
  if (template) return template;
  try {
    template = new Template(source);
  } catch (e) {
    throw new DropserveError('DS_UNSUPPORTED', `chat template cannot be parsed: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if (parsedTemplates.size >= MAX_CACHED_TEMPLATES)
    parsedTemplates.delete(parsedTemplates.keys().next().value!);
  parsedTemplates.set(source, template);
  return template;
}
