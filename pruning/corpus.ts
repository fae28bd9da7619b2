/**
 * Text files for calibration and evaluation. A file with `<|endoftext|>` separator lines (the
 * TinyStories .txt convention) is a list of documents; any other file is one running text that is
 * cut into windows of tokens.
 */
import { readFileSync, statSync } from 'node:fs';
import { DropserveError } from '../engine/errors.ts';

export const DOCUMENT_SEPARATOR = '<|endoftext|>';
const SEPARATOR_LINE = /^[ \t]*<\|endoftext\|>[ \t]*$/m;
const SEPARATOR_LINES = /^[ \t]*<\|endoftext\|>[ \t]*$/gm;

export interface Corpus {
  path: string;
  text: string;
  /** Trimmed, non-empty documents when the file has separator lines; null for running text. */
  documents: string[] | null;
}

export function readCorpus(path: string): Corpus {
  let text: string;
  try {
    if (!statSync(path).isFile()) throw new Error('not a file');
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `data file ${path}: cannot read (${(e as Error).message})`,
      {
        param: 'data',
      },
    );
  }
  if (text.trim() === '')
    throw new DropserveError('DS_INVALID_ARGUMENT', `data file ${path} is empty`, { param: 'data' });
  return { path, text, documents: splitDocuments(text) };
}

/** Documents between `<|endoftext|>` lines, or null when the text has no such line. */
export function splitDocuments(text: string): string[] | null {
  if (!SEPARATOR_LINE.test(text)) return null;
  return text
    .split(SEPARATOR_LINES)
    .map((d) => d.trim())
    .filter((d) => d !== '');
}
