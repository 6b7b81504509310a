// The code editor: CodeMirror 6 with Python, JavaScript and C++ highlighting. Colours are CSS
// variables (playground.css), so the light and dark themes switch without touching the editor.

import {closeBrackets, closeBracketsKeymap} from "@codemirror/autocomplete";
import {defaultKeymap, history, historyKeymap, indentWithTab} from "@codemirror/commands";
import {cpp} from "@codemirror/lang-cpp";
import {javascript} from "@codemirror/lang-javascript";
import {python} from "@codemirror/lang-python";
import {
  bracketMatching,
  HighlightStyle,
  indentOnInput,
  indentUnit,
  syntaxHighlighting,
} from "@codemirror/language";
import {highlightSelectionMatches, searchKeymap} from "@codemirror/search";
import {Annotation, Compartment, EditorState, Prec, Transaction} from "@codemirror/state";
import {
  drawSelection,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import {tags as t} from "@lezer/highlight";

const LANGUAGES = {
  python: () => [python(), indentUnit.of("    ")],
  javascript: () => [javascript(), indentUnit.of("  ")],
  "c++": () => [cpp(), indentUnit.of("    ")],
};

const highlight = HighlightStyle.define([
  {tag: [t.keyword, t.controlKeyword, t.moduleKeyword, t.operatorKeyword], color: "var(--hl-keyword)"},
  {tag: [t.string, t.special(t.string), t.character, t.regexp], color: "var(--hl-string)"},
  {tag: [t.number, t.bool, t.null, t.atom], color: "var(--hl-number)"},
  {tag: [t.comment, t.lineComment, t.blockComment], color: "var(--hl-comment)", fontStyle: "italic"},
  {
    tag: [t.function(t.variableName), t.function(t.propertyName), t.function(t.definition(t.variableName))],
    color: "var(--hl-function)",
  },
  {tag: [t.typeName, t.className, t.namespace, t.standard(t.typeName)], color: "var(--hl-type)"},
  {tag: [t.processingInstruction, t.meta, t.macroName], color: "var(--hl-meta)"},
  {tag: [t.definition(t.variableName), t.self], color: "var(--hl-definition)"},
  {tag: t.invalid, color: "var(--hl-invalid)"},
]);

const look = EditorView.theme({
  "&": {height: "100%", color: "var(--text)", backgroundColor: "var(--editor-bg)"},
  ".cm-content": {caretColor: "var(--text)", fontFamily: "var(--mono)"},
  ".cm-scroller": {fontFamily: "var(--mono)", lineHeight: "1.5"},
  ".cm-cursor, .cm-dropCursor": {borderLeftColor: "var(--text)"},
  "&.cm-focused .cm-selectionBackground, .cm-selectionBackground, ::selection": {
    backgroundColor: "var(--selection) !important",
  },
  ".cm-gutters": {
    backgroundColor: "var(--editor-bg)",
    color: "var(--muted)",
    borderRight: "1px solid var(--border)",
  },
  ".cm-activeLine": {backgroundColor: "var(--active-line)"},
  ".cm-activeLineGutter": {backgroundColor: "var(--active-line)", color: "var(--text)"},
  ".cm-matchingBracket": {backgroundColor: "var(--match)", outline: "none"},
  ".cm-selectionMatch": {backgroundColor: "var(--match)"},
  ".cm-panels": {backgroundColor: "var(--panel)", color: "var(--text)"},
});

// Marks changes that came from the server (another tab's save), which are not saved back.
const fromServer = Annotation.define();

export class Editor {
  /** `nonce`: the page's CSP style nonce, for the style element CodeMirror adds. */
  constructor(parent, {language, source, nonce, onEdit, onRun}) {
    this.language = new Compartment();
    this.view = new EditorView({
      parent,
      state: EditorState.create({
        doc: source,
        extensions: [
          lineNumbers(),
          highlightActiveLineGutter(),
          highlightSpecialChars(),
          history(),
          drawSelection(),
          indentOnInput(),
          bracketMatching(),
          closeBrackets(),
          highlightActiveLine(),
          highlightSelectionMatches(),
          syntaxHighlighting(highlight),
          look,
          this.language.of(LANGUAGES[language]?.() ?? []),
          Prec.highest(keymap.of([{key: "Mod-Enter", run: () => (onRun(), true)}])),
          keymap.of([
            ...closeBracketsKeymap,
            ...defaultKeymap,
            ...searchKeymap,
            ...historyKeymap,
            indentWithTab,
          ]),
          EditorView.cspNonce.of(nonce),
          EditorView.contentAttributes.of({"aria-label": "Source code"}),
          EditorView.updateListener.of((update) => {
            if (update.docChanged && !update.transactions.some((tr) => tr.annotation(fromServer))) {
              onEdit();
            }
          }),
        ],
      }),
    });
  }

  get source() {
    return this.view.state.doc.toString();
  }

  setLanguage(language) {
    this.view.dispatch({effects: this.language.reconfigure(LANGUAGES[language]?.() ?? [])});
  }

  /** Replace the text with the server's, as one change around what differs (cursors stay put). */
  setSource(text, {local = false} = {}) {
    const old = this.source;
    if (old === text) return;
    let start = 0;
    while (start < old.length && start < text.length && old[start] === text[start]) start++;
    let oldEnd = old.length;
    let newEnd = text.length;
    while (oldEnd > start && newEnd > start && old[oldEnd - 1] === text[newEnd - 1]) {
      oldEnd--;
      newEnd--;
    }
    // Never cut a surrogate pair in two.
    if (start > 0 && isHighSurrogate(old.charCodeAt(start - 1))) start--;
    if (oldEnd < old.length && isLowSurrogate(old.charCodeAt(oldEnd)) && oldEnd > start) {
      oldEnd++;
      newEnd++;
    }
    this.view.dispatch({
      changes: {from: start, to: oldEnd, insert: text.slice(start, newEnd)},
      annotations: local ? [] : [fromServer.of(true), Transaction.addToHistory.of(false)],
    });
  }

  focus() {
    this.view.focus();
  }
}

const isHighSurrogate = (code) => code >= 0xd800 && code <= 0xdbff;
const isLowSurrogate = (code) => code >= 0xdc00 && code <= 0xdfff;
