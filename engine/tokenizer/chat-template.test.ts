import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithAssets, TINYSTORIES_656K, TOK512 } from '../../tests/support/shared-assets.ts';
import type { DropserveError } from '../errors.ts';
import { errorOf } from '../testing/expect-dropserve-error.ts';
import { FALLBACK_CHAT_TEMPLATE, renderChatPrompt } from './chat-template.ts';
import { HfTokenizer } from './hf-tokenizer.ts';
import { Llama2cTokenizer } from './llama2c-tokenizer.ts';

const TINY = TINYSTORIES_656K.path;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-chat-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Llama 2 style: BOS string in the text, roles must alternate user/assistant. */
const ALTERNATING =
  "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}" +
  "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}";

const conversation = [
  { role: 'system', content: 'You tell stories.' },
  { role: 'user', content: 'Tell me about a cat.' },
];

describe('renderChatPrompt with a llama2.c tokenizer', () => {
  it('uses the documented fallback', () => {
    const tok = Llama2cTokenizer.fromFile(TOK512);
    const rendered = renderChatPrompt(tok, [{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
    expect(rendered.text).toBe('User: Hi\nAssistant:');
    expect(FALLBACK_CHAT_TEMPLATE).toContain('add_generation_prompt');
  });
});

describeWithAssets([TINYSTORIES_656K], 'renderChatPrompt', () => {
  let tiny: HfTokenizer;
  beforeAll(() => {
    tiny = HfTokenizer.fromDir(TINY);
  });

  it('uses the documented fallback for tinystories-656K, which ships no template', () => {
    expect(tiny.chatTemplate).toBeUndefined();
    const rendered = renderChatPrompt(tiny, conversation, { addGenerationPrompt: true });
    expect(rendered).toEqual({
      text: 'System: You tell stories.\nUser: Tell me about a cat.\nAssistant:',
      hasBos: false,
    });
    expect(renderChatPrompt(tiny, conversation).text).toBe(
      'System: You tell stories.\nUser: Tell me about a cat.\n',
    );
  });

  it('renders a ChatML template passed in the options', () => {
    const rendered = renderChatPrompt(tiny, conversation, { addGenerationPrompt: true, template: CHATML });
    expect(rendered.text).toBe(
      '<|im_start|>system\nYou tell stories.<|im_end|>\n<|im_start|>user\nTell me about a cat.<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(rendered.hasBos).toBe(false);
  });

  it('renders the tokenizer’s own template with bos/eos strings and flags a leading BOS', () => {
    const dir = path.join(tmp, 'with-template');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(TINY, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    const config = JSON.parse(fs.readFileSync(path.join(TINY, 'tokenizer_config.json'), 'utf8'));
    fs.writeFileSync(
      path.join(dir, 'tokenizer_config.json'),
      JSON.stringify({ ...config, chat_template: ALTERNATING }),
    );
    const tok = HfTokenizer.fromDir(dir);
    const messages = [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello' },
      { role: 'user', content: 'Story?' },
    ];
    const rendered = renderChatPrompt(tok, messages, { addGenerationPrompt: true });
    expect(rendered.text).toBe(
      '<|start_story|>[INST] Hi [/INST] Hello <|end_story|><|start_story|>[INST] Story? [/INST]',
    );
    expect(rendered.hasBos).toBe(true);
    // The BOS string encodes to the BOS id, so the caller must not add another.
    expect(tok.encode(rendered.text)[0]).toBe(tok.bosTokenId);

    const error = errorOf(() => renderChatPrompt(tok, conversation));
    expect(error.code).toBe('DS_INVALID_ARGUMENT');
    expect(error.message).toContain('Conversation roles must alternate');
  });

  it('reports unparsable templates and render failures with codes', () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return (e as DropserveError).code;
      }
      return 'no error';
    };
    expect(code(() => renderChatPrompt(tiny, conversation, { template: '{% if %}' }))).toBe('DS_UNSUPPORTED');
    expect(code(() => renderChatPrompt(tiny, conversation, { template: '{{ undefined_fn() }}' }))).toBe(
      'DS_INVALID_ARGUMENT',
    );
  });

  it('provides range() and strftime_now() as transformers does', () => {
    const yearBefore = new Date().getFullYear();
    const text = renderChatPrompt(tiny, [], {
      template: "{% for i in range(1, 4) %}{{ i }}{% endfor %} {{ strftime_now('%Y') }}",
    }).text;
    // Read around the call: a render at midnight on 31 December is still right.
    expect([`123 ${yearBefore}`, `123 ${new Date().getFullYear()}`]).toContain(text);
  });
});
