// The live response library: upload (with description and parameter
// description, confirming before replacing a file), list, delete.
import { api, explain } from './api.js';
import { h, time, size, errorBanner, infoBanner, confirm } from './ui.js';

function uploadForm(onDone) {
  const file = h('input', { type: 'file', id: 'upload-file', required: true });
  const description = h('input', { type: 'text', id: 'upload-description', class: 'grow', maxlength: 1000 });
  const parameters = h('input', { type: 'text', id: 'upload-parameters', class: 'grow', maxlength: 1000, placeholder: 'e.g. -Path <folder> -Days <n>' });
  const status = h('div', { id: 'upload-status' });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'upload-submit' }, 'Upload');
  const form = h('form', { class: 'panel', id: 'upload-form', novalidate: true },
    h('h2', {}, 'Upload a file'),
    status,
    h('div', { class: 'field' }, h('label', { for: 'upload-file' }, 'File ', h('span', { class: 'hint' }, '(scripts run by their extension: .sh, .ps1, .py, ...)')), file),
    h('div', { class: 'field' }, h('label', { for: 'upload-description' }, 'Description'), description),
    h('div', { class: 'field' }, h('label', { for: 'upload-parameters' }, 'Parameters ', h('span', { class: 'hint' }, '(for scripts: what arguments they take; shown when running them)')), parameters),
    submit);

  const send = async (replace) => {
    const body = new FormData();
    body.append('File', file.files[0]);
    if (description.value.trim()) body.append('Description', description.value.trim());
    if (parameters.value.trim()) {
      body.append('HasParameters', 'true');
      body.append('ParametersDescription', parameters.value.trim());
    }
    if (replace) body.append('OverrideIfExists', 'true');
    return api('/api/libraryfiles', { method: 'POST', form: body });
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.replaceChildren();
    if (!file.files.length) {
      status.append(errorBanner('Choose a file to upload.'));
      return;
    }
    submit.disabled = true;
    try {
      let stored;
      try {
        stored = await send(false);
      } catch (error) {
        if (error.code !== 'Conflict') throw error;
        const name = file.files[0].name;
        const answer = await confirm('Replace the library file?', `A file named ${name} is already in the library. Actions already queued keep the old bytes; new ones get the new file.`, 'Replace it');
        if (!answer) {
          status.append(infoBanner(`Nothing changed: ${name} is still the old file.`));
          return;
        }
        stored = await send(true);
      }
      status.append(infoBanner(`Uploaded ${stored.fileName} (${size(stored.size)}).`));
      form.reset();
      onDone();
    } catch (error) {
      status.append(errorBanner(explain(error)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function page(main, ctx) {
  const body = h('tbody');
  const problem = h('div');
  const load = async () => {
    try {
      const files = (await api('/api/libraryfiles')).value;
      problem.replaceChildren();
      body.replaceChildren(...files.map((f) => {
        const remove = h('button', { type: 'button', class: 'danger', 'data-delete': f.fileName }, 'Delete');
        remove.addEventListener('click', async () => {
          const answer = await confirm(`Delete ${f.fileName}?`, 'Actions already queued keep their copy. New actions can no longer use it.', 'Delete', { danger: true });
          if (!answer) return;
          try {
            await api(`/api/libraryfiles/${encodeURIComponent(f.fileName)}`, { method: 'DELETE' });
            await load();
          } catch (error) {
            problem.replaceChildren(errorBanner(explain(error)));
          }
        });
        return h('tr', { 'data-file': f.fileName },
          h('td', {}, h('strong', {}, f.fileName), f.description ? h('div', { class: 'hint' }, f.description) : null,
            f.parametersDescription ? h('div', { class: 'hint' }, 'Parameters: ', f.parametersDescription) : null),
          h('td', { class: 'mono', title: f.sha256 }, `${f.sha256.slice(0, 12)}…`),
          h('td', {}, size(f.size)),
          h('td', {}, f.createdBy, h('div', { class: 'hint' }, time(f.creationTime))),
          h('td', {}, f.lastUpdatedBy || f.createdBy, h('div', { class: 'hint' }, time(f.lastUpdatedTime))),
          h('td', {}, remove));
      }));
      if (!files.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'The library is empty. Upload a script or a tool above.')));
    } catch (error) {
      problem.replaceChildren(errorBanner(explain(error)));
    }
  };
  main.append(
    h('h1', {}, 'Library'),
    h('p', { class: 'sub' }, 'Files and scripts that PutFile and RunScript can send to devices. Each is checked by its SHA-256 on the device.'),
    ctx.can('manageLibrary') ? uploadForm(load) : infoBanner('Your account cannot use the library: that needs the Library.Manage role.'),
    problem,
    h('table', {}, h('thead', {}, h('tr', {}, ['File', 'SHA-256', 'Size', 'Created by', 'Last updated', ''].map((c) => h('th', { scope: 'col' }, c)))), body));
  if (ctx.can('manageLibrary')) await load();
}
