" ~/.config/nvim/init.vim: Neovim settings in Vimscript, no plugins.
" `:help 'option'` explains any option below, e.g. :help 'smartcase'

" --- Display
set number              " line numbers
" set relativenumber    " uncomment for distances to other lines (5j, 3k)
set scrolloff=4         " keep a few lines visible above and below the cursor
set signcolumn=yes      " a fixed gutter, so text does not jump
set list                " show tabs and trailing spaces (as set in 'listchars')
set splitbelow splitright
set mouse=a             " mouse in all modes; hold Shift to select text for the terminal

" --- Indentation: 2 spaces. Per language, e.g. for Go (tabs):
"   autocmd FileType go setlocal noexpandtab shiftwidth=8
set expandtab shiftwidth=2 softtabstop=2

" --- Search: case-insensitive unless the pattern has a capital letter.
set ignorecase smartcase
" :grep uses ripgrep when it is installed (results go to the quickfix list).
if executable('rg')
  set grepprg=rg\ --vimgrep\ --smart-case
  set grepformat=%f:%l:%c:%m
endif

" --- Persistent undo, kept in the home: ~/.local/state/nvim/undo
" (Neovim >= 0.8 uses that directory by default; the image's 0.7 does not.)
let s:undo = (empty($XDG_STATE_HOME) ? expand('~/.local/state') : $XDG_STATE_HOME) . '/nvim/undo'
if !isdirectory(s:undo)
  call mkdir(s:undo, 'p')
endif
let &undodir = s:undo . '//'
set undofile

" --- Clipboard: the container has no X or Wayland clipboard, so the + and *
" registers do not reach your computer's clipboard by default. Neovim >= 0.10
" can copy through the terminal instead: see :help clipboard-osc52

" --- Keys. Leader is Space: Space w saves, and so on.
let mapleader = ' '
nnoremap <leader>w <Cmd>write<CR>
nnoremap <leader>q <Cmd>quit<CR>
nnoremap <leader>e <Cmd>Explore<CR>
" Clear the search highlight.
nnoremap <leader><Space> <Cmd>nohlsearch<CR>
" Open a file anywhere below the current directory: Space f, part of a name, Tab.
set path+=**
nnoremap <leader>f :find<Space>

" --- Reopen files at the line where you left them.
augroup home_init
  autocmd!
  autocmd BufReadPost * if &filetype !~# 'commit' && line("'\"") > 1 && line("'\"") <= line('$')
        \ | execute 'normal! g`"' | endif
augroup END
